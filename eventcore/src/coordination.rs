//! In-process coordination: an executor's commands on the same streams take turns.
//!
//! Optimistic concurrency alone makes commands that share a hot stream race:
//! all read the same version, one append wins, the rest conflict, back off
//! and read again, and under enough load most of the database's work is
//! thrown away. Commands that run in the same process need not race: each
//! waits, in arrival order, for the commands ahead of it on any of its
//! declared streams, so it reads what they wrote and its append does not
//! conflict with them. Commands in other processes are still caught by the
//! store's version check and retried.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::{Mutex as TurnLock, OwnedMutexGuard};

use crate::StreamId;

/// One lock per stream some command of this executor is using or waiting for.
#[derive(Debug, Default)]
pub(crate) struct StreamLocks {
    locks: Mutex<HashMap<StreamId, Arc<TurnLock<()>>>>,
}

impl StreamLocks {
    /// Waits for this command's turn on every stream in `streams`.
    ///
    /// Locks are taken in stream-id order, so two commands sharing several
    /// streams cannot each hold one the other waits for. Tokio's mutex
    /// queues waiters first come, first served.
    pub(crate) async fn take_turn(&self, streams: &[StreamId]) -> Turn<'_> {
        let mut ids: Vec<&StreamId> = streams.iter().collect();
        ids.sort();
        ids.dedup();
        let mut turn = Turn {
            locks: self,
            slots: Vec::with_capacity(ids.len()),
        };
        for id in ids {
            let lock = Arc::clone(self.map().entry(id.clone()).or_default());
            turn.slots.push(Slot {
                id: id.clone(),
                lock: Arc::clone(&lock),
                guard: None,
            });
            let guard = lock.lock_owned().await;
            if let Some(slot) = turn.slots.last_mut() {
                slot.guard = Some(guard);
            }
        }
        turn
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, Arc<TurnLock<()>>>> {
        // The map is consistent after any panic: entries are only inserted or removed.
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many streams have a lock entry (held or awaited).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

/// A command's turn on its streams; ends when dropped, also when the command
/// is cancelled while still waiting.
pub(crate) struct Turn<'a> {
    locks: &'a StreamLocks,
    slots: Vec<Slot>,
}

struct Slot {
    id: StreamId,
    lock: Arc<TurnLock<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map();
        for mut slot in self.slots.drain(..) {
            drop(slot.guard.take());
            // Every clone of a lock is made under the map's mutex, so with
            // only the map's and this slot's references left no one else
            // holds or awaits it and the entry can go.
            if Arc::strong_count(&slot.lock) == 2 {
                map.remove(&slot.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ids(names: &[&str]) -> Vec<StreamId> {
        names
            .iter()
            .map(|n| StreamId::try_new(*n).unwrap())
            .collect()
    }

    /// Whether a turn on `names` comes within `millis` (the wait is cancelled if not).
    async fn turn_within(locks: &StreamLocks, names: &[&str], millis: u64) -> bool {
        let streams = ids(names);
        tokio::time::timeout(Duration::from_millis(millis), locks.take_turn(&streams))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn commands_on_a_shared_stream_wait_and_others_do_not() {
        let locks = StreamLocks::default();
        let streams = ids(&["a", "b"]);
        let first = locks.take_turn(&streams).await;
        assert!(!turn_within(&locks, &["b"], 20).await, "b is held");
        assert!(turn_within(&locks, &["c"], 5_000).await, "c is free");
        drop(first);
        assert!(
            turn_within(&locks, &["b", "a"], 5_000).await,
            "released with the first command's turn"
        );
    }

    #[tokio::test]
    async fn entries_go_when_no_one_uses_them_even_after_a_cancelled_wait() {
        let locks = StreamLocks::default();
        let streams = ids(&["x", "y"]);
        let held = locks.take_turn(&streams).await;
        assert!(!turn_within(&locks, &["y"], 10).await);
        assert_eq!(locks.len(), 2);
        drop(held);
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overlapping_multi_stream_turns_never_deadlock() {
        let locks = Arc::new(StreamLocks::default());
        let mut tasks = Vec::new();
        for n in 0..32_usize {
            let locks = locks.clone();
            tasks.push(tokio::spawn(async move {
                let names = ["p", "q", "r"];
                let mine = ids(&[names[n % 3], names[(n + 1) % 3]]);
                for _ in 0..50 {
                    let _turn = locks.take_turn(&mine).await;
                    tokio::task::yield_now().await;
                }
            }));
        }
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(locks.len(), 0);
    }
}
