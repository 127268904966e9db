//! The versions of a set of streams, as a read or an append saw them: [`StreamVersions`] and its iterators.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize, de::MapAccess, ser::SerializeMap};
use smallvec::SmallVec;

use crate::{StreamId, StreamVersion};

/// Streams a set holds without allocating: most commands touch one or two.
const INLINE_STREAMS: usize = 2;

/// The version of each of a set of streams, ordered by stream id, each
/// stream once: what a read saw ([`StreamsRead::versions`](crate::StreamsRead::versions)),
/// what an append left ([`AppendResult::versions`](crate::AppendResult::versions),
/// [`ExecutionResult::versions`](crate::ExecutionResult::versions)), what a
/// snapshot covers.
///
/// A small sorted vector rather than a `BTreeMap`: a command's streams are
/// few, and one or two of them are held without allocating. It reads like
/// a map by stream id (`get`, `contains_key`, `keys`, `values`, `insert`),
/// iterates in stream-id order, converts to and from
/// `BTreeMap<StreamId, StreamVersion>`, and serializes as a map from stream
/// id to version: the same JSON as that `BTreeMap`.
///
/// ```
/// use eventcore::{StreamId, StreamVersion, StreamVersions};
///
/// let a = StreamId::try_new("account-a")?;
/// let b = StreamId::try_new("account-b")?;
/// let mut versions: StreamVersions =
///     [(b.clone(), StreamVersion::new(2)), (a.clone(), StreamVersion::new(5))].into();
/// assert_eq!(versions.get(&a), Some(StreamVersion::new(5)));
/// assert_eq!(versions.keys().collect::<Vec<_>>(), [&a, &b]); // in id order
///
/// // Inserting a stream again replaces its version.
/// assert_eq!(versions.insert(b.clone(), StreamVersion::new(3)), Some(StreamVersion::new(2)));
/// assert_eq!(versions.len(), 2);
/// assert_eq!(serde_json::to_string(&versions)?, r#"{"account-a":5,"account-b":3}"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StreamVersions(SmallVec<[(StreamId, StreamVersion); INLINE_STREAMS]>);

impl StreamVersions {
    /// An empty set.
    pub const fn new() -> Self {
        Self(SmallVec::new_const())
    }

    /// The set of one stream's version.
    pub fn one(stream_id: StreamId, version: StreamVersion) -> Self {
        let mut entries = SmallVec::new();
        entries.push((stream_id, version));
        Self(entries)
    }

    /// How many streams it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds no stream.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, stream_id: &StreamId) -> Result<usize, usize> {
        self.0.binary_search_by(|(id, _)| id.cmp(stream_id))
    }

    /// The version of `stream_id`, if the set holds it.
    pub fn get(&self, stream_id: &StreamId) -> Option<StreamVersion> {
        self.position(stream_id).ok().map(|i| self.0[i].1)
    }

    /// The version of `stream_id`, to change in place, if the set holds it.
    pub fn get_mut(&mut self, stream_id: &StreamId) -> Option<&mut StreamVersion> {
        match self.position(stream_id) {
            Ok(i) => Some(&mut self.0[i].1),
            Err(_) => None,
        }
    }

    /// Whether the set holds `stream_id`.
    pub fn contains_key(&self, stream_id: &StreamId) -> bool {
        self.position(stream_id).is_ok()
    }

    /// Sets the version of `stream_id`; returns the version it replaced.
    ///
    /// A stream after every other one is pushed at the end; one in the
    /// middle moves those after it. To build a large set from streams in
    /// no particular order, `collect` or `extend` (one sort) instead.
    pub fn insert(&mut self, stream_id: StreamId, version: StreamVersion) -> Option<StreamVersion> {
        // Streams usually come in id order: then the new one goes last.
        if self.0.last().is_none_or(|(last, _)| *last < stream_id) {
            self.0.push((stream_id, version));
            return None;
        }
        match self.position(&stream_id) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, version)),
            Err(i) => {
                self.0.insert(i, (stream_id, version));
                None
            }
        }
    }

    /// Each stream and its version, in stream-id order.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.0.iter())
    }

    /// The streams, in id order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &StreamId> + DoubleEndedIterator {
        self.0.iter().map(|(id, _)| id)
    }

    /// The versions, in the streams' id order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = StreamVersion> + DoubleEndedIterator {
        self.0.iter().map(|(_, version)| *version)
    }

    /// Sorts entries pushed in any order and keeps the last entry of each
    /// stream; entries already in order (the usual case) are left as they are.
    fn restore_order(&mut self) {
        if self.0.windows(2).all(|pair| pair[0].0 < pair[1].0) {
            return;
        }
        // Stable: of equal ids, the last given stays last.
        self.0.sort_by(|a, b| a.0.cmp(&b.0));
        let mut kept = 0;
        for i in 0..self.0.len() {
            if i + 1 < self.0.len() && self.0[i].0 == self.0[i + 1].0 {
                continue;
            }
            self.0.swap(kept, i);
            kept += 1;
        }
        self.0.truncate(kept);
    }
}

/// Later entries for a stream replace earlier ones, as in a map.
impl FromIterator<(StreamId, StreamVersion)> for StreamVersions {
    fn from_iter<I: IntoIterator<Item = (StreamId, StreamVersion)>>(iter: I) -> Self {
        let mut versions = Self(iter.into_iter().collect());
        versions.restore_order();
        versions
    }
}

/// Later entries for a stream replace earlier ones, as in a map.
impl Extend<(StreamId, StreamVersion)> for StreamVersions {
    fn extend<I: IntoIterator<Item = (StreamId, StreamVersion)>>(&mut self, iter: I) {
        self.0.extend(iter);
        self.restore_order();
    }
}

impl<const N: usize> From<[(StreamId, StreamVersion); N]> for StreamVersions {
    fn from(entries: [(StreamId, StreamVersion); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl From<BTreeMap<StreamId, StreamVersion>> for StreamVersions {
    fn from(map: BTreeMap<StreamId, StreamVersion>) -> Self {
        // Already in order, each stream once: nothing to sort.
        Self(map.into_iter().collect())
    }
}

impl From<StreamVersions> for BTreeMap<StreamId, StreamVersion> {
    fn from(versions: StreamVersions) -> Self {
        versions.into_iter().collect()
    }
}

/// Borrowed entries of a [`StreamVersions`], in stream-id order.
#[derive(Debug, Clone)]
pub struct Iter<'a>(std::slice::Iter<'a, (StreamId, StreamVersion)>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a StreamId, StreamVersion);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(id, version)| (id, *version))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|(id, version)| (id, *version))
    }
}

impl<'a> IntoIterator for &'a StreamVersions {
    type Item = (&'a StreamId, StreamVersion);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The entries of a [`StreamVersions`], in stream-id order.
pub struct IntoIter(smallvec::IntoIter<[(StreamId, StreamVersion); INLINE_STREAMS]>);

impl fmt::Debug for IntoIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.as_slice()).finish()
    }
}

impl Iterator for IntoIter {
    type Item = (StreamId, StreamVersion);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for IntoIter {}

impl DoubleEndedIterator for IntoIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back()
    }
}

impl IntoIterator for StreamVersions {
    type Item = (StreamId, StreamVersion);
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter(self.0.into_iter())
    }
}

/// As a map: `{"account-a": 5, ...}`.
impl fmt::Debug for StreamVersions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// As a map from stream id to version, like `BTreeMap<StreamId, StreamVersion>`.
impl Serialize for StreamVersions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (stream_id, version) in self {
            map.serialize_entry(stream_id, &version)?;
        }
        map.end()
    }
}

/// From a map from stream id to version; a repeated stream keeps its last version.
impl<'de> Deserialize<'de> for StreamVersions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = StreamVersions;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from stream id to stream version")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StreamVersions, A::Error> {
                let mut versions = StreamVersions::new();
                while let Some((stream_id, version)) = map.next_entry()? {
                    versions.insert(stream_id, version);
                }
                Ok(versions)
            }
        }

        deserializer.deserialize_map(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(n: u8) -> StreamId {
        StreamId::try_new(format!("s-{n:03}")).unwrap_or_else(|e| unreachable!("{e}"))
    }

    proptest! {
        /// Whatever is built or inserted, it answers as a `BTreeMap` would.
        #[test]
        fn behaves_like_a_btree_map(
            built in prop::collection::vec((0_u8..12, 0_u64..5), 0..10),
            inserted in prop::collection::vec((0_u8..12, 0_u64..5), 0..10),
        ) {
            let mut versions: StreamVersions =
                built.iter().map(|&(s, v)| (id(s), StreamVersion::new(v))).collect();
            let mut map: BTreeMap<StreamId, StreamVersion> =
                built.iter().map(|&(s, v)| (id(s), StreamVersion::new(v))).collect();
            for &(s, v) in &inserted {
                prop_assert_eq!(
                    versions.insert(id(s), StreamVersion::new(v)),
                    map.insert(id(s), StreamVersion::new(v))
                );
            }
            let extended: Vec<_> = inserted.iter().rev().map(|&(s, v)| (id(s), StreamVersion::new(v + 7))).collect();
            let mut versions_extended = versions.clone();
            versions_extended.extend(extended.clone());
            let mut map_extended = map.clone();
            map_extended.extend(extended);
            prop_assert_eq!(BTreeMap::from(versions_extended), map_extended);
            prop_assert_eq!(versions.len(), map.len());
            for s in 0..12 {
                prop_assert_eq!(versions.get(&id(s)), map.get(&id(s)).copied());
                prop_assert_eq!(versions.contains_key(&id(s)), map.contains_key(&id(s)));
            }
            let listed: Vec<_> = versions.iter().map(|(s, v)| (s.clone(), v)).collect();
            let expected: Vec<_> = map.iter().map(|(s, v)| (s.clone(), *v)).collect();
            prop_assert_eq!(&listed, &expected);
            prop_assert_eq!(
                serde_json::to_string(&versions).ok(),
                serde_json::to_string(&map).ok()
            );
            let back: StreamVersions = serde_json::from_str(&serde_json::to_string(&map).unwrap_or_default())
                .unwrap_or_default();
            prop_assert_eq!(&back, &versions);
            prop_assert_eq!(BTreeMap::from(versions.clone()), map.clone());
            prop_assert_eq!(StreamVersions::from(map), versions);
        }
    }

    #[test]
    fn debug_shows_a_map() {
        let versions = StreamVersions::one(id(1), StreamVersion::new(4));
        let map = BTreeMap::from(versions.clone());
        assert_eq!(format!("{versions:?}"), format!("{map:?}"));
    }
}
