//! The one lock helper both ends use.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking the state even if a thread panicked while holding it.
///
/// Every lock in this framework guards state that stays consistent across a panic: no code
/// panics between two related updates, and the one place user code runs under a lock (a
/// `Serialize` impl encoding into the write buffer) rolls its half-written frame back on
/// unwind. So a poisoned lock is recovered rather than spreading one panic to every call of
/// the connection.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_yields_its_state() {
        let mutex = std::sync::Arc::new(Mutex::new(1));
        let poisoner = mutex.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock();
            panic!("poison the lock");
        })
        .join();
        assert!(mutex.is_poisoned());
        *lock(&mutex) += 1;
        assert_eq!(*lock(&mutex), 2);
    }
}
