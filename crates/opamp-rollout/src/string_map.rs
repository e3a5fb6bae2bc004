//! [`StringMap`]: a small, sorted map of strings held in two allocations.
//!
//! Every registered agent carries two such maps (its labels and its installed package
//! versions), each with a handful of entries that change rarely. A `BTreeMap<String, String>`
//! spends a 544-byte leaf plus one allocation per string on that; this map keeps the keys and
//! values in one string and their end offsets in one slice, about 100 bytes for two labels.
//! Lookups are binary searches; inserts rebuild the map, which suits data that is read far more
//! often than it changes.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Index;

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// A map from string keys to string values, sorted by key, stored compactly.
///
/// It serializes as a map (the same JSON as a `BTreeMap<String, String>`) and iterates in key
/// order.
///
/// ```
/// use opamp_rollout::StringMap;
///
/// let mut labels: StringMap = [("env", "prod"), ("region", "eu")].into_iter().collect();
/// assert_eq!(labels.get("env"), Some("prod"));
/// labels.insert("env", "staging");
/// assert_eq!(labels["env"], *"staging");
/// assert_eq!(labels.keys().collect::<Vec<_>>(), ["env", "region"]);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StringMap {
    /// Key 0, value 0, key 1, value 1, ... with no separators.
    text: Box<str>,
    /// End offset in `text` of each key and value, in the order above.
    ends: Box<[usize]>,
}

impl StringMap {
    /// An empty map (allocates nothing).
    #[must_use]
    pub fn new() -> Self {
        StringMap::default()
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    /// Whether the map has no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The value stored under `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).ok().map(|i| self.value_at(i))
    }

    /// Whether `key` has a value.
    #[must_use]
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Sets `key` to `value`, returning the previous value. Rebuilds the map.
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Option<String> {
        let (key, value) = (key.as_ref(), value.as_ref());
        let mut entries: Vec<(&str, &str)> = self.iter().collect();
        let previous = match self.position(key) {
            Ok(i) => Some(std::mem::replace(&mut entries[i].1, value).to_owned()),
            Err(i) => {
                entries.insert(i, (key, value));
                None
            }
        };
        *self = Self::from_sorted(entries);
        previous
    }

    /// Removes `key`, returning its value. Rebuilds the map.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.position(key).ok()?;
        let previous = self.value_at(i).to_owned();
        let entries = self.iter().enumerate().filter(|(j, _)| *j != i);
        *self = Self::from_sorted(entries.map(|(_, entry)| entry).collect());
        Some(previous)
    }

    /// Entries in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            map: self,
            front: 0,
            back: self.len(),
        }
    }

    /// Keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator + '_ {
        self.iter().map(|(key, _)| key)
    }

    /// Values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator + '_ {
        self.iter().map(|(_, value)| value)
    }

    /// Copies the entries into a `BTreeMap` (for APIs that want one).
    #[must_use]
    pub fn to_btree_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect()
    }

    /// Builds from entries sorted by key with no key twice.
    fn from_sorted(entries: Vec<(&str, &str)>) -> Self {
        let length = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut text = String::with_capacity(length);
        let mut ends = Vec::with_capacity(entries.len() * 2);
        for (key, value) in entries {
            text.push_str(key);
            ends.push(text.len());
            text.push_str(value);
            ends.push(text.len());
        }
        StringMap {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    fn piece(&self, index: usize) -> &str {
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1],
        };
        &self.text[start..self.ends[index]]
    }

    fn key_at(&self, entry: usize) -> &str {
        self.piece(entry * 2)
    }

    fn value_at(&self, entry: usize) -> &str {
        self.piece(entry * 2 + 1)
    }

    /// `Ok(entry)` where `key` is, or `Err(entry)` where it would go.
    fn position(&self, key: &str) -> Result<usize, usize> {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = low + (high - low) / 2;
            match self.key_at(middle).cmp(key) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Ok(middle),
            }
        }
        Err(low)
    }
}

/// Iterator over a [`StringMap`]'s entries in key order.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    map: &'a StringMap,
    front: usize,
    back: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.front == self.back {
            return None;
        }
        let entry = self.front;
        self.front += 1;
        Some((self.map.key_at(entry), self.map.value_at(entry)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.back - self.front;
        (left, Some(left))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front == self.back {
            return None;
        }
        self.back -= 1;
        Some((self.map.key_at(self.back), self.map.value_at(self.back)))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a StringMap {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Later entries win over earlier ones with the same key, as with `BTreeMap`.
impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for StringMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let entries: Vec<(K, V)> = entries.into_iter().collect();
        let mut sorted: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, value) in &entries {
            sorted.insert(key.as_ref(), value.as_ref());
        }
        Self::from_sorted(sorted.into_iter().collect())
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> From<[(K, V); N]> for StringMap {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl From<BTreeMap<String, String>> for StringMap {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self::from_sorted(map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
    }
}

impl From<&StringMap> for BTreeMap<String, String> {
    fn from(map: &StringMap) -> Self {
        map.to_btree_map()
    }
}

/// `map["key"]` panics when the key is absent, as with `BTreeMap`.
impl Index<&str> for StringMap {
    type Output = str;

    fn index(&self, key: &str) -> &str {
        match self.get(key) {
            Some(value) => value,
            None => panic!("no entry for key {key:?}"),
        }
    }
}

impl fmt::Debug for StringMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for StringMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (key, value) in self {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for StringMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(deserializer).map(StringMap::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever is inserted and removed, the map answers like a `BTreeMap` fed the same.
        #[test]
        fn behaves_like_a_btree_map(
            operations in proptest::collection::vec(
                ("[a-d]{0,3}", "[x-z]{0,3}", any::<bool>()), 0..40)
        ) {
            let mut compact = StringMap::new();
            let mut reference = BTreeMap::new();
            for (key, value, is_insert) in operations {
                if is_insert {
                    let old = compact.insert(&key, &value);
                    prop_assert_eq!(old, reference.insert(key.clone(), value));
                } else {
                    prop_assert_eq!(compact.remove(&key), reference.remove(&key));
                }
                prop_assert_eq!(compact.len(), reference.len());
                prop_assert_eq!(compact.to_btree_map(), reference.clone());
                prop_assert_eq!(compact.get(&key), reference.get(&key).map(String::as_str));
                let reversed: Vec<_> = compact.iter().rev().collect();
                let expected: Vec<_> =
                    reference.iter().rev().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                prop_assert_eq!(reversed, expected);
            }
            prop_assert_eq!(StringMap::from(reference.clone()), compact);
        }
    }

    #[test]
    fn serializes_as_the_btree_map_it_replaces() {
        let map: StringMap = [("region", "eu"), ("env", "prod"), ("env", "dev")].into();
        let json = serde_json::to_string(&map).expect("encodes");
        assert_eq!(json, r#"{"env":"dev","region":"eu"}"#);
        let reference: BTreeMap<String, String> = serde_json::from_str(&json).expect("decodes");
        assert_eq!(json, serde_json::to_string(&reference).expect("encodes"));
        let back: StringMap = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, map);
        assert_eq!(format!("{map:?}"), format!("{reference:?}"));
    }

    #[test]
    fn empty_keys_and_values_keep_their_places() {
        let map: StringMap = [("", "a"), ("b", ""), ("c", "d")].into();
        assert_eq!(map.get(""), Some("a"));
        assert_eq!(map.get("b"), Some(""));
        assert_eq!(map.get("c"), Some("d"));
        assert_eq!(map.get("a"), None);
        assert!(StringMap::new().is_empty());
    }
}
