//! In-process coordination: an executor's commands on the same streams take turns.
//!
//! Optimistic concurrency alone makes commands that share a hot stream race:
//! all read the same version, one append wins, the rest conflict, back off
//! and read again, and under enough load most of the database's work is
//! thrown away. Commands that run in the same process need not race: each
//! waits for the commands using any of its declared streams, so it reads
//! what they wrote and its append does not conflict with them. Commands in other processes are still caught by the
//! store's version check and retried.
//!
//! A command starts as soon as none of its streams is in use, even if an
//! earlier command still waits for some of them, unless that earlier
//! command has been passed over many times: then it reserves its streams.

use std::{
    borrow::Cow,
    collections::{HashSet, VecDeque},
    sync::{Mutex, MutexGuard, PoisonError},
};

use tokio::sync::oneshot;

use crate::StreamId;

/// Scheduling passes a waiting command may be passed over by later ones
/// before it reserves its streams, so that later commands wait behind it.
/// Until then, any command whose streams are all free runs at once: on 10
/// hot streams and 16 tasks this keeps up to 5 transfers running where
/// strict arrival order keeps about 2, and the bound keeps every command's
/// wait finite. 32 rather than 64: in alternating runs on PostgreSQL (10 hot
/// streams, 16 tasks) it gave the same or more commands/s and a p99 about
/// 15% lower; 16 and 8 cut the p99 further but lost 8% and 25% of throughput.
const PASSES_BEFORE_RESERVING: u32 = 16;

/// The streams commands of one executor are using, and the commands waiting.
#[derive(Debug, Default)]
pub(crate) struct StreamLocks {
    state: Mutex<State>,
}

/// foldhash: a few lookups per command, cheaper than SipHash, seeded at random.
type Set<T> = HashSet<T, foldhash::quality::RandomState>;

#[derive(Debug, Default)]
struct State {
    busy: Set<StreamId>,
    /// In arrival order.
    waiting: VecDeque<Waiter>,
    next_ticket: u64,
}

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    streams: Vec<StreamId>,
    passed_over: u32,
    start: oneshot::Sender<()>,
}

impl State {
    fn free(&self, streams: &[StreamId], reserved: &Set<&StreamId>) -> bool {
        streams
            .iter()
            .all(|s| !self.busy.contains(s) && !reserved.contains(s))
    }

    /// Starts every waiting command whose streams are all free and not
    /// reserved by a command ahead of it that was passed over too often.
    fn schedule(&mut self) {
        if self.waiting.is_empty() {
            // The common case: nobody waits, nothing to build.
            return;
        }
        let mut still_waiting = VecDeque::with_capacity(self.waiting.len());
        let mut reserved: Set<StreamId> = Set::default();
        while let Some(mut waiter) = self.waiting.pop_front() {
            let free = waiter
                .streams
                .iter()
                .all(|s| !self.busy.contains(s) && !reserved.contains(s));
            if free {
                self.busy.extend(waiter.streams.iter().cloned());
                // A command cancelled meanwhile is released by its guard.
                let _ = waiter.start.send(());
                continue;
            }
            waiter.passed_over += 1;
            if waiter.passed_over > PASSES_BEFORE_RESERVING {
                reserved.extend(waiter.streams.iter().cloned());
            }
            still_waiting.push_back(waiter);
        }
        self.waiting = still_waiting;
    }

    fn release(&mut self, streams: &[StreamId]) {
        for stream in streams {
            self.busy.remove(stream);
        }
        self.schedule();
    }
}

impl StreamLocks {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every change leaves the state consistent before anything can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until this command may run on `streams`: none of them is used
    /// by another command of this executor, and none is reserved by a
    /// command that has waited long.
    pub(crate) async fn take_turn<'a>(&'a self, streams: &'a [StreamId]) -> Turn<'a> {
        // Sorted and without repeats; most commands declare one stream, or
        // a few already in order, and are not copied.
        let streams: Cow<'a, [StreamId]> = if streams.is_sorted_by(|a, b| a < b) {
            Cow::Borrowed(streams)
        } else {
            let mut sorted = streams.to_vec();
            sorted.sort();
            sorted.dedup();
            Cow::Owned(sorted)
        };
        let (ticket, started) = {
            let mut state = self.state();
            let free = if state.waiting.is_empty() {
                // Nobody waits, so nobody has reserved anything.
                streams.iter().all(|s| !state.busy.contains(s))
            } else {
                let reserved: Set<&StreamId> = state
                    .waiting
                    .iter()
                    .filter(|w| w.passed_over > PASSES_BEFORE_RESERVING)
                    .flat_map(|w| w.streams.iter())
                    .collect();
                state.free(&streams, &reserved)
            };
            if free {
                state.busy.extend(streams.iter().cloned());
                return Turn {
                    locks: self,
                    streams,
                };
            }
            let (start, started) = oneshot::channel();
            state.next_ticket += 1;
            let ticket = state.next_ticket;
            state.waiting.push_back(Waiter {
                ticket,
                streams: streams.to_vec(),
                passed_over: 0,
                start,
            });
            (ticket, started)
        };
        let waiting = Waiting {
            locks: self,
            ticket,
            streams,
        };
        // The sender lives in the queue until the turn is granted; it is
        // never dropped unsent while this guard exists.
        let _ = started.await;
        waiting.into_turn()
    }

    /// How many streams are in use and commands wait.
    #[cfg(test)]
    fn len(&self) -> usize {
        let state = self.state();
        state.busy.len() + state.waiting.len()
    }
}

/// A command waiting for its turn; if dropped (the command was cancelled),
/// it leaves the queue, or gives back the turn granted meanwhile.
struct Waiting<'a> {
    locks: &'a StreamLocks,
    ticket: u64,
    streams: Cow<'a, [StreamId]>,
}

impl<'a> Waiting<'a> {
    fn into_turn(mut self) -> Turn<'a> {
        let streams = std::mem::replace(&mut self.streams, Cow::Borrowed(&[]));
        self.ticket = 0;
        Turn {
            locks: self.locks,
            streams,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.ticket == 0 {
            return;
        }
        let mut state = self.locks.state();
        let queued = state.waiting.iter().position(|w| w.ticket == self.ticket);
        match queued {
            Some(index) => {
                state.waiting.remove(index);
                // It may have reserved streams others wait for.
                state.schedule();
            }
            None => state.release(&self.streams),
        }
    }
}

/// A command's turn on its streams; ends when dropped.
pub(crate) struct Turn<'a> {
    locks: &'a StreamLocks,
    streams: Cow<'a, [StreamId]>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.locks.state().release(&self.streams);
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use futures::FutureExt;

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

    /// Two streams used in overlapping turns would keep a command that needs
    /// both waiting forever; after enough passes it reserves them.
    #[test]
    fn a_command_passed_over_too_often_reserves_its_streams() {
        let locks = StreamLocks::default();
        let (a, b, both) = (ids(&["a"]), ids(&["b"]), ids(&["a", "b"]));
        let mut held = locks.take_turn(&a).now_or_never().unwrap();
        let mut waiter = Box::pin(locks.take_turn(&both));
        assert!((&mut waiter).now_or_never().is_none(), "a is in use");
        let mut next = &b;
        for pass in 1.. {
            // Take the other stream before giving this one back: the
            // waiter never sees both free, unless they are reserved for it.
            let Some(other) = locks.take_turn(next).now_or_never() else {
                assert!(
                    pass > PASSES_BEFORE_RESERVING / 2,
                    "reserved after {pass} passes"
                );
                drop(held);
                assert!((&mut waiter).now_or_never().is_some(), "the waiter runs");
                break;
            };
            drop(held);
            held = other;
            next = if next == &a { &b } else { &a };
            assert!(pass < 10 * PASSES_BEFORE_RESERVING, "the waiter starves");
        }
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
