//! Snapshots in the executor: where a read starts, and the state kept after an append.

use std::{collections::HashMap, sync::Arc};

use super::{CommandExecutor, ExecutionError, error::store_failure};
use crate::{
    AppendResult, CommandLogic, EventMetadata, EventStore, EventType, Payload, Snapshot,
    SnapshotKey, SnapshotPolicy, StoredEvent, StreamId, StreamVersion, StreamVersions, StreamsRead,
    WrittenEvent, snapshot::Lookup, telemetry::Meter,
};

/// Where a read for a decision starts: a snapshot's state and the events
/// after it, or the default state and every event.
pub(super) struct Resumed<T> {
    pub(super) state: T,
    pub(super) read: StreamsRead,
    /// How far the snapshot used reaches, if one was.
    pub(super) base: Option<u64>,
    /// Whether the executor has seen the snapshot key lately (or the store
    /// had a snapshot for it): its streams are likely to come back.
    pub(super) seen_before: bool,
    /// How far the newest snapshot in the store reaches, as far as this
    /// executor knows (0: none known).
    pub(super) stored_reach: u64,
}

impl<T: Default> Resumed<T> {
    pub(super) fn from_start(read: StreamsRead) -> Self {
        Self {
            state: T::default(),
            read,
            base: None,
            seen_before: false,
            stored_reach: 0,
        }
    }
}

/// The state a command decided on, encoded before `handle` consumed it.
pub(super) struct Seed<T> {
    pub(super) policy: SnapshotPolicy<T>,
    pub(super) streams: Vec<StreamId>,
    pub(super) state: crate::Payload,
    /// See [`Resumed::stored_reach`].
    pub(super) stored_reach: u64,
}

/// One event a command wrote, as a read would return it but for what the
/// store assigns.
pub(super) struct Own {
    pub(super) stream_id: StreamId,
    pub(super) version: StreamVersion,
    pub(super) event_type: EventType,
    pub(super) payload: Payload,
}

impl<S: EventStore> CommandExecutor<S> {
    /// The newest usable snapshot's state and the events after it, or the
    /// default state and every event when there is none.
    pub(super) async fn read_from_snapshot<C: CommandLogic>(
        &self,
        policy: &SnapshotPolicy<C::State>,
        streams: &[StreamId],
        meter: Meter,
    ) -> Result<Resumed<C::State>, ExecutionError<C::Error>> {
        let name = std::any::type_name::<C>();
        let store_error = |source| store_failure(name, source);
        let key = SnapshotKey::new(policy.name(), streams);
        let (seen_before, kept, stored_reach) = match self.snapshots.look_up(&key) {
            Lookup::New => (false, None, 0),
            Lookup::Seen {
                snapshot,
                stored_reach,
            } => (true, snapshot, stored_reach),
        };
        meter.snapshot_lookup(kept.is_some(), self.snapshots.bytes_held());
        // A snapshot this executor saved or loaded: read only what follows it.
        if let Some(snapshot) = kept.filter(|s| usable(s, policy, streams)) {
            let read = meter
                .store_call(
                    "read_streams_after",
                    self.store.read_streams_after(&snapshot.versions),
                )
                .await
                .map_err(store_error)?;
            if let Some(resumed) = self.resume(policy, snapshot, read, stored_reach) {
                return Ok(resumed);
            }
        }
        // Otherwise the store's snapshot and what follows it, in one call.
        let read = self
            .store
            .read_from_snapshot(&key, policy.state_version(), streams);
        match meter.store_call("read_from_snapshot", read).await {
            Ok((None, read)) => {
                return Ok(Resumed {
                    seen_before,
                    ..Resumed::from_start(read)
                });
            }
            Ok((Some(snapshot), read)) if usable(&snapshot, policy, streams) => {
                let snapshot = Arc::new(snapshot);
                self.snapshots.put_stored(Arc::clone(&snapshot));
                let reach = snapshot.reach();
                if let Some(resumed) = self.resume(policy, snapshot, read, reach) {
                    return Ok(resumed);
                }
            }
            Ok((Some(_), _)) => {
                tracing::warn!(key = key.as_str(), "snapshot of other streams ignored");
            }
            Err(error) => {
                tracing::warn!(key = key.as_str(), %error, "snapshot not loaded; folding from the start");
            }
        }
        Ok(Resumed {
            seen_before,
            ..Resumed::from_start(self.read(name, streams, meter).await?)
        })
    }

    /// The snapshot's state with the events read after it, unless the state
    /// does not decode or a stream is now below the snapshot's version.
    fn resume<T: Default>(
        &self,
        policy: &SnapshotPolicy<T>,
        snapshot: Arc<Snapshot>,
        read: StreamsRead,
        stored_reach: u64,
    ) -> Option<Resumed<T>> {
        let current = snapshot
            .versions
            .iter()
            .all(|(stream, version)| read.version(stream) >= version);
        if !current {
            tracing::warn!(
                key = snapshot.key.as_str(),
                "snapshot ahead of its streams ignored"
            );
            self.snapshots.forget(&snapshot.key);
            return None;
        }
        let reach = snapshot.reach();
        match policy.decode(&snapshot.state) {
            Ok(state) => Some(Resumed {
                state,
                read,
                base: Some(reach),
                seen_before: true,
                stored_reach,
            }),
            Err(error) => {
                tracing::warn!(key = snapshot.key.as_str(), %error, "undecodable snapshot ignored");
                self.snapshots.forget(&snapshot.key);
                None
            }
        }
    }

    /// Saves a snapshot; a failure only costs later executions some
    /// folding, so it is logged, not returned.
    pub(super) async fn save_snapshot(&self, snapshot: Arc<Snapshot>, meter: Meter) {
        self.snapshots.put_stored(Arc::clone(&snapshot));
        let saved = meter.store_call("save_snapshot", self.store.save_snapshot(&snapshot));
        if let Err(error) = saved.await {
            tracing::warn!(key = snapshot.key.as_str(), %error, "snapshot not saved");
        }
    }

    /// After an append: the state the command decided on with its own new
    /// events folded in is the state at the versions just written (the
    /// append checked that nothing came in between), so it is kept as a
    /// snapshot; the next command on the same streams folds only what
    /// others wrote since. Saved to the store too once it reaches the
    /// policy's number of events beyond the stored one.
    pub(super) async fn remember_written<C: CommandLogic>(
        &self,
        command: &C,
        seed: Seed<C::State>,
        own: Vec<Own>,
        result: &AppendResult,
        metadata: &EventMetadata,
        meter: Meter,
    ) {
        let Ok(mut state) = seed.policy.decode(&seed.state) else {
            return;
        };
        let assigned: HashMap<(&StreamId, StreamVersion), &WrittenEvent> = result
            .events
            .iter()
            .map(|written| ((&written.stream_id, written.version), written))
            .collect();
        let mut events = Vec::with_capacity(own.len());
        for own in own {
            let Some(&&WrittenEvent {
                id,
                position,
                recorded_at,
                ..
            }) = assigned.get(&(&own.stream_id, own.version))
            else {
                return;
            };
            // Decoded from the JSON written, exactly as a later read decodes it.
            let Ok(payload) = own.payload.decode::<C::Event>() else {
                return;
            };
            events.push(StoredEvent {
                id,
                stream_id: own.stream_id,
                version: own.version,
                position,
                recorded_at,
                event_type: own.event_type,
                schema_version: crate::Event::schema_version(&payload),
                metadata: metadata.clone(),
                payload,
            });
        }
        events.sort_by_key(|event| event.position);
        for event in &events {
            command.apply(&mut state, event);
        }
        let Some(snapshot) =
            snapshot_of(&seed.policy, &seed.streams, &state, &result.versions, None)
        else {
            return;
        };
        let snapshot = Arc::new(snapshot);
        let beyond_stored = snapshot.reach().saturating_sub(seed.stored_reach);
        self.snapshots
            .put_derived(Arc::clone(&snapshot), seed.stored_reach);
        if beyond_stored >= seed.policy.every_events() {
            self.save_snapshot(snapshot, meter).await;
        }
    }
}

/// The snapshot of `state` folded at `versions`, unless it would not reach
/// further than the one it started from (`base`) or does not encode.
pub(super) fn snapshot_of<T>(
    policy: &SnapshotPolicy<T>,
    streams: &[StreamId],
    state: &T,
    versions: &StreamVersions,
    base: Option<u64>,
) -> Option<Snapshot> {
    let key = SnapshotKey::new(policy.name(), streams);
    let state = match policy.encode(state) {
        Ok(encoded) => encoded,
        Err(error) => {
            tracing::warn!(key = key.as_str(), %error, "state not snapshotted: it did not encode");
            return None;
        }
    };
    let snapshot = Snapshot {
        key,
        state_version: policy.state_version(),
        versions: versions.clone(),
        state,
    };
    (base.is_none_or(|base| snapshot.reach() > base)).then_some(snapshot)
}

/// Whether a loaded snapshot fits this policy and exactly these streams.
fn usable<T>(snapshot: &Snapshot, policy: &SnapshotPolicy<T>, streams: &[StreamId]) -> bool {
    snapshot.state_version == policy.state_version()
        && snapshot.versions.len() == streams.len()
        && streams.iter().all(|s| snapshot.versions.contains_key(s))
}
