//! Snapshots: a command's folded state saved with the stream versions it
//! covers, so a later execution folds only the events after them.
//!
//! A command opts in through [`CommandLogic::snapshots`](crate::CommandLogic::snapshots),
//! returning a [`SnapshotPolicy`]. The executor then, before reading:
//!
//! 1. loads the snapshot saved under the command's [`SnapshotKey`] (the
//!    policy's name and the declared streams, in declaration order);
//! 2. uses it only if its state version equals the policy's, its state
//!    decodes, and no stream is now below the version the snapshot covers;
//!    otherwise it reads and folds the streams from the start, as without
//!    snapshots;
//! 3. reads only the events after the snapshot's versions and folds them
//!    onto the snapshot's state;
//! 4. saves a new snapshot once it folded at least the policy's `every`
//!    events since the last one. A failure to load or save a snapshot is
//!    logged and never fails the command.
//!
//! After a successful append the executor also folds the command's own new
//! events (decoded from the JSON it wrote, as a later read would decode
//! them) into the state the command decided on: the append checked that no
//! other event came in between, so that is the state at the versions just
//! written. It keeps it in memory, so the next command on the same streams
//! from this executor reads only what others wrote since, and saves it to
//! the store once it reaches `every` events beyond the stored snapshot. It
//! does this for streams it has seen lately (from the second command on
//! the same key on) or when it saves a snapshot anyway, so commands on
//! streams used once pay nothing for it.
//!
//! A snapshot is a cache of a pure fold: it must depend on nothing but the
//! events of the declared streams and the policy's name. Commands whose
//! `apply` reads other fields of the command (for example to tell a
//! transfer's source from its destination) are safe only because the key
//! lists the streams in declaration order; anything else `apply` depends on
//! belongs in the policy's name.

use std::sync::Arc;

use serde::{Serialize, de::DeserializeOwned};

use crate::{StreamId, StreamVersion, StreamVersions};

/// Default number of events folded between two snapshots.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100;

/// Where a snapshot is stored: a policy name and the streams it folds, in order.
///
/// ```
/// use eventcore::{SnapshotKey, StreamId};
///
/// let a = StreamId::try_new("account-1")?;
/// let b = StreamId::try_new("account-2")?;
/// let forward = SnapshotKey::new("transfer", &[a.clone(), b.clone()]);
/// let backward = SnapshotKey::new("transfer", &[b, a]);
/// assert_ne!(forward, backward);
/// # Ok::<(), eventcore::InvalidStreamId>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotKey(String);

impl SnapshotKey {
    /// The key of `name` over `streams`; unambiguous whatever characters
    /// the name and ids hold (it is their JSON encoding).
    pub fn new(name: &str, streams: &[StreamId]) -> Self {
        let ids: Vec<&str> = streams.iter().map(AsRef::as_ref).collect();
        // Serializing strings to a string cannot fail; the fallback only
        // guards the impossible and still keeps keys apart.
        Self(serde_json::to_string(&(name, ids)).unwrap_or_else(|_| format!("{name:?}{streams:?}")))
    }

    /// The key as text, as adapters store it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key read back from storage.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }
}

/// A command's folded state at known stream versions.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Where it is stored.
    pub key: SnapshotKey,
    /// The state type's version, from the policy that saved it.
    pub state_version: u32,
    /// The version of every stream the state covers.
    pub versions: StreamVersions,
    /// The encoded state, as its JSON text (compact: a state in the
    /// executor's cache costs its text, not a tree of values).
    pub state: crate::Payload,
}

impl Snapshot {
    /// How far the snapshot reaches: the sum of its stream versions. Stores
    /// keep the snapshot reaching furthest under each key (for one state
    /// version), since every stream's version only grows.
    pub fn reach(&self) -> u64 {
        self.versions.values().map(StreamVersion::value).sum()
    }
}

/// How a command's state is snapshotted: a name, the state's version, and
/// how often.
///
/// Bump `state_version` whenever the state type or the fold changes shape:
/// snapshots saved under another version are ignored.
///
/// ```
/// use eventcore::SnapshotPolicy;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Balance { cents: i64 }
///
/// let policy = SnapshotPolicy::<Balance>::new("balance", 1).every(500);
/// assert_eq!(policy.every_events(), 500);
/// ```
pub struct SnapshotPolicy<S> {
    name: &'static str,
    state_version: u32,
    every: u64,
    after_appends: bool,
    encode: fn(&S) -> Result<crate::Payload, serde_json::Error>,
    decode: fn(&crate::Payload) -> Result<S, serde_json::Error>,
}

// By hand: a derive would require `S: Clone`, and the policy holds no `S`.
impl<S> Clone for SnapshotPolicy<S> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            state_version: self.state_version,
            every: self.every,
            after_appends: self.after_appends,
            encode: self.encode,
            decode: self.decode,
        }
    }
}

impl<S> std::fmt::Debug for SnapshotPolicy<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotPolicy")
            .field("name", &self.name)
            .field("state_version", &self.state_version)
            .field("every", &self.every)
            .field("after_appends", &self.after_appends)
            .finish()
    }
}

impl<S: Serialize + DeserializeOwned> SnapshotPolicy<S> {
    /// Snapshots named `name` of state version `state_version`, saved every
    /// [`DEFAULT_SNAPSHOT_EVERY`] folded events.
    pub fn new(name: &'static str, state_version: u32) -> Self {
        Self {
            name,
            state_version,
            every: DEFAULT_SNAPSHOT_EVERY,
            after_appends: true,
            encode: encode_state,
            decode: crate::Payload::decode,
        }
    }
}

/// A state as JSON text, refused when JSON cannot hold it as it is: a NaN
/// or infinite float (which would be written as `null`, and the snapshot
/// would not decode again), a NUL character, nesting past the limit.
fn encode_state<S: Serialize>(state: &S) -> Result<crate::Payload, serde_json::Error> {
    crate::Payload::encode(state)?.map_err(|problem| {
        serde::ser::Error::custom(match problem {
            crate::payload::JsonProblem::NonFinite => {
                "the state holds a NaN or infinite number, which JSON cannot store"
            }
            crate::payload::JsonProblem::Nul => "the state holds a NUL character (U+0000)",
            crate::payload::JsonProblem::TooDeep => "the state nests JSON too deep",
        })
    })
}

impl<S> SnapshotPolicy<S> {
    /// Saves a snapshot once it reaches at least `events` events (at least 1)
    /// beyond the last one saved.
    #[must_use]
    pub fn every(mut self, events: u64) -> Self {
        self.every = events.max(1);
        self
    }

    /// Whether the executor keeps the state after each append the command
    /// makes (on by default; see the [module docs](self)). It costs two
    /// encodings and one decoding of the state per execution; turn it off
    /// for states so large that this outweighs folding the events again.
    ///
    /// ```
    /// use eventcore::SnapshotPolicy;
    ///
    /// let policy = SnapshotPolicy::<Vec<u64>>::new("ledger", 1).after_appends(false);
    /// assert!(!policy.keeps_state_after_appends());
    /// ```
    #[must_use]
    pub fn after_appends(mut self, keep: bool) -> Self {
        self.after_appends = keep;
        self
    }

    /// See [`after_appends`](Self::after_appends).
    pub fn keeps_state_after_appends(&self) -> bool {
        self.after_appends
    }

    /// The policy's name, the first part of its snapshots' keys.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The state version snapshots must carry to be used.
    pub fn state_version(&self) -> u32 {
        self.state_version
    }

    /// Events folded between two snapshots.
    pub fn every_events(&self) -> u64 {
        self.every
    }

    pub(crate) fn encode(&self, state: &S) -> Result<crate::Payload, serde_json::Error> {
        (self.encode)(state)
    }

    pub(crate) fn decode(&self, state: &crate::Payload) -> Result<S, serde_json::Error> {
        (self.decode)(state)
    }
}

/// The snapshots an executor saved, loaded or derived last, so that a
/// command run again in the same process skips loading its snapshot from
/// the store and folds only what others wrote since.
///
/// Entries are only ever a pure fold at known versions, so an entry older
/// than the stored snapshot costs some folding and nothing else. A key is
/// first remembered as seen, without a snapshot: the executor keeps state
/// after appends only for keys seen before, so commands on streams used
/// once (a large population touched at random) spend nothing on it.
/// Bounded in bytes ([`DEFAULT_SNAPSHOT_CACHE_BYTES`]) by quick_cache's
/// S3-FIFO policy: keys used once leave soon, keys used again stay, however
/// many keys pass through and however large their states.
pub(crate) struct SnapshotCache {
    entries: quick_cache::sync::Cache<SnapshotKey, Cached, Bytes, foldhash::quality::RandomState>,
}

/// What an entry costs, about: its key, its state's text and its versions,
/// and a fixed part for the entry and the snapshot around them.
#[derive(Debug, Clone, Copy)]
struct Bytes;

/// The fixed part of an entry's cost.
const ENTRY_BYTES: usize = 160;
/// What one stream's version costs in a snapshot's map.
const VERSION_BYTES: usize = 64;

impl quick_cache::Weighter<SnapshotKey, Cached> for Bytes {
    fn weight(&self, key: &SnapshotKey, cached: &Cached) -> u64 {
        let snapshot = cached.snapshot.as_ref().map_or(0, |snapshot| {
            snapshot.state.as_json().len()
                + snapshot.versions.len() * VERSION_BYTES
                + snapshot.key.as_str().len()
        });
        (ENTRY_BYTES + key.as_str().len() + snapshot) as u64
    }
}

#[derive(Debug, Clone)]
struct Cached {
    /// Shared with the executions that use it: a hit copies nothing.
    /// `None`: the key was seen, with no snapshot yet.
    snapshot: Option<Arc<Snapshot>>,
    /// How far the newest snapshot this executor saved or loaded under the
    /// key reaches: the store holds at least that one.
    stored_reach: u64,
}

impl Cached {
    /// A key seen, with no snapshot kept.
    const SEEN: Self = Self {
        snapshot: None,
        stored_reach: 0,
    };
}

/// What the cache knows of a key.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// Not seen lately; it is now.
    New,
    /// Seen before.
    Seen {
        /// The snapshot kept for the key, if any.
        snapshot: Option<Arc<Snapshot>>,
        /// How far the newest snapshot this executor saved or loaded under
        /// the key reaches.
        stored_reach: u64,
    },
}

/// How many bytes of snapshots (and keys only seen) an executor keeps in
/// memory by default: 64 MiB
/// ([`CommandExecutor::with_snapshot_cache_bytes`](crate::CommandExecutor::with_snapshot_cache_bytes)).
/// States are kept as their JSON text, so that is about 64 MiB of states'
/// JSON, plus a few hundred bytes per key.
pub const DEFAULT_SNAPSHOT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The number of entries the cache expects, for its tables: one per key
/// seen, most of them without a snapshot.
const EXPECTED_ENTRIES: usize = 10_000;

impl SnapshotCache {
    /// A cache holding at most `bytes` of entries, as [`Bytes`] weighs them.
    pub(crate) fn with_budget(bytes: u64) -> Self {
        Self {
            entries: quick_cache::sync::Cache::with(
                EXPECTED_ENTRIES,
                bytes.max(1),
                Bytes,
                foldhash::quality::RandomState::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            ),
        }
    }

    /// The bytes the entries held weigh now.
    pub(crate) fn bytes_held(&self) -> u64 {
        self.entries.weight()
    }
}

impl Default for SnapshotCache {
    fn default() -> Self {
        Self::with_budget(DEFAULT_SNAPSHOT_CACHE_BYTES)
    }
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("keys", &self.entries.len())
            .finish()
    }
}

impl SnapshotCache {
    /// What is kept under `key`; a key not seen lately is noted as seen.
    pub(crate) fn look_up(&self, key: &SnapshotKey) -> Lookup {
        match self.entries.get(key) {
            Some(cached) => Lookup::Seen {
                snapshot: cached.snapshot,
                stored_reach: cached.stored_reach,
            },
            None => {
                self.entries.insert(key.clone(), Cached::SEEN);
                Lookup::New
            }
        }
    }

    /// Keeps a snapshot that was saved to or loaded from the store.
    pub(crate) fn put_stored(&self, snapshot: Arc<Snapshot>) {
        let reach = snapshot.reach();
        self.put_derived(snapshot, reach);
    }

    /// Keeps a snapshot the store may not have, derived from one that
    /// reached `stored_reach` in the store (as far as the executor knew).
    pub(crate) fn put_derived(&self, snapshot: Arc<Snapshot>, stored_reach: u64) {
        let key = snapshot.key.clone();
        let cached = Cached {
            snapshot: Some(snapshot),
            stored_reach,
        };
        self.entries.insert(key, cached);
    }

    /// Drops the snapshot kept under `key`; the key stays seen.
    pub(crate) fn forget(&self, key: &SnapshotKey) {
        self.entries.insert(key.clone(), Cached::SEEN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_json_of_name_and_stream_ids() {
        let streams = [
            StreamId::try_new("a\"b").unwrap(),
            StreamId::try_new("ünï\\c").unwrap(),
        ];
        let key = SnapshotKey::new("name \u{1}", &streams);
        // The format stores already hold: a change would orphan their snapshots.
        let expected = serde_json::json!(["name \u{1}", ["a\"b", "ünï\\c"]]).to_string();
        assert_eq!(key.as_str(), expected);
    }

    #[test]
    fn states_with_nan_or_infinity_are_not_encoded() {
        assert!(super::encode_state(&(1_u8, f64::NAN)).is_err());
        assert!(super::encode_state(&vec![Some(f32::NEG_INFINITY)]).is_err());
        assert_eq!(
            super::encode_state(&(Some(2.5_f64), None::<f64>))
                .unwrap()
                .as_json(),
            "[2.5,null]"
        );
    }
}
