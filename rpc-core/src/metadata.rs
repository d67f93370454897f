//! Call metadata: small key/value pairs that travel with a request (auth tokens, trace ids).

use serde::{Deserialize, Serialize};

/// Key/value pairs sent with a call, readable by the handler through
/// [`Context`](crate::Context).
///
/// Values are bytes; [`Metadata::get_str`] reads a UTF-8 value. Keys may repeat;
/// [`Metadata::get`] returns the first.
///
/// ```
/// use rpc::Metadata;
/// let mut md = Metadata::new();
/// md.insert("authorization", "Bearer secret");
/// assert_eq!(md.get_str("authorization"), Some("Bearer secret"));
/// assert_eq!(md.get("missing"), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    entries: Vec<(String, Vec<u8>)>,
}

impl Metadata {
    /// Empty metadata; does not allocate.
    pub const fn new() -> Self {
        Metadata {
            entries: Vec::new(),
        }
    }

    /// Empty metadata with room for `pairs` pairs.
    #[inline]
    pub fn with_capacity(pairs: usize) -> Self {
        Metadata {
            entries: Vec::with_capacity(pairs),
        }
    }

    /// Adds a pair.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.entries.push((key.into(), value.into()));
    }

    /// The first value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The first value under `key`, if it is UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bytes of keys and values together, as checked against a size limit.
    pub fn byte_len(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}
