//! Typed values that travel with one call on the server: an interceptor leaves them (the
//! authenticated user, the token's scopes), the handler reads them from its
//! [`Context`](crate::Context).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A map from a type to one value of it, empty by default (and then costing no allocation).
///
/// Cheap to clone: the values are shared, and a clone that inserts copies only the table.
///
/// ```
/// #[derive(Debug, PartialEq)]
/// struct User(String);
///
/// let mut extensions = rpc::Extensions::default();
/// extensions.insert(User("ada".into()));
/// assert_eq!(extensions.get::<User>(), Some(&User("ada".into())));
/// assert_eq!(extensions.get::<u32>(), None);
/// ```
#[derive(Clone, Default)]
pub struct Extensions {
    map: Option<Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
}

impl Extensions {
    /// An empty map.
    pub const fn new() -> Self {
        Extensions { map: None }
    }

    /// Stores `value`, replacing any value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        let map = self.map.get_or_insert_with(Default::default);
        Arc::make_mut(map).insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if one was stored.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.map
            .as_ref()?
            .get(&TypeId::of::<T>())?
            .downcast_ref::<T>()
    }

    /// Whether no value is stored.
    pub fn is_empty(&self) -> bool {
        self.map.as_ref().is_none_or(|map| map.is_empty())
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.map.as_ref().map_or(0, |map| map.len());
        f.debug_struct("Extensions").field("values", &len).finish()
    }
}
