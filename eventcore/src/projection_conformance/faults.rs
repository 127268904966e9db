//! Cases of the projection suite under faults: fenced checkpoints, a
//! checkpoint store that goes away, a lease that is lost.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::{Ledger, Recorder, append_markers, by_count, processed, wait_until};
use crate::{
    Checkpoint, CheckpointStore, EventStore, FencingToken, GlobalPosition, Leadership,
    PendingRequest, ProjectionRequest, ProjectionRunner, ProjectionState, StoreError,
};

const NAME: &str = "conformance-recorder";

/// The checkpoint store's fencing contract: a claim raises the fence and
/// returns the saved checkpoint; a save with an older fence is refused and
/// changes nothing; an unfenced save keeps the stored fence.
pub async fn a_newer_leader_fences_out_the_old_one<S, K>(_store: S, checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    let first = checkpoints
        .claim(NAME, Some(FencingToken::new(1)))
        .await
        .unwrap();
    assert_eq!(first.position, GlobalPosition::START);
    assert_eq!(first.fence, Some(FencingToken::new(1)));

    let mut old = first.clone();
    old.position = GlobalPosition::new(5, 5);
    old.events_processed = 5;
    checkpoints.save(&old).await.unwrap();

    let taken = checkpoints
        .claim(NAME, Some(FencingToken::new(2)))
        .await
        .unwrap();
    assert_eq!(
        (taken.position, taken.events_processed, taken.fence),
        (old.position, 5, Some(FencingToken::new(2))),
        "the claim returns the old leader's progress"
    );

    old.position = GlobalPosition::new(9, 9);
    old.events_processed = 9;
    let refused = checkpoints.save(&old).await.unwrap_err();
    assert!(matches!(refused, StoreError::Fenced { .. }), "{refused:?}");
    let stored = checkpoints.load(NAME).await.unwrap().unwrap();
    assert_eq!(stored.events_processed, 5, "a refused save changes nothing");

    let mut new = taken.clone();
    new.events_processed = 6;
    checkpoints.save(&new).await.unwrap();
    let mut unfenced = new.clone();
    unfenced.fence = None;
    unfenced.events_processed = 7;
    checkpoints.save(&unfenced).await.unwrap();
    let stored = checkpoints.load(NAME).await.unwrap().unwrap();
    assert_eq!(
        (stored.events_processed, stored.fence),
        (7, Some(FencingToken::new(2))),
        "an unfenced save keeps the fence"
    );

    let late = checkpoints
        .claim(NAME, Some(FencingToken::new(1)))
        .await
        .unwrap_err();
    assert!(matches!(late, StoreError::Fenced { .. }), "{late:?}");
}

/// A checkpoint store that fails every call while `down` is set.
#[derive(Debug, Clone)]
struct Flaky<K> {
    inner: K,
    down: Arc<AtomicBool>,
}

impl<K> Flaky<K> {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable {
                reason: "the conformance suite took the checkpoint store down".to_owned(),
                source: None,
            })
        } else {
            Ok(())
        }
    }
}

impl<K: CheckpointStore> CheckpointStore for Flaky<K> {
    async fn load(&self, name: &str) -> Result<Option<Checkpoint>, StoreError> {
        self.check()?;
        self.inner.load(name).await
    }

    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.check()?;
        self.inner.save(checkpoint).await
    }

    async fn claim(
        &self,
        name: &str,
        fence: Option<FencingToken>,
    ) -> Result<Checkpoint, StoreError> {
        self.check()?;
        self.inner.claim(name, fence).await
    }

    async fn list(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.check()?;
        self.inner.list().await
    }

    async fn request(&self, name: &str, request: ProjectionRequest) -> Result<(), StoreError> {
        self.check()?;
        self.inner.request(name, request).await
    }

    async fn pending_request(&self, name: &str) -> Result<Option<PendingRequest>, StoreError> {
        self.check()?;
        self.inner.pending_request(name).await
    }

    async fn clear_request(&self, name: &str, pending: &PendingRequest) -> Result<(), StoreError> {
        self.check()?;
        self.inner.clear_request(name, pending).await
    }
}

/// The checkpoint store goes away while events arrive: the runner stops
/// applying, waits in standby (saying why), and when the store is back
/// resumes from the durable checkpoint; no event is lost.
pub async fn a_runner_waits_out_a_checkpoint_store_outage<S, K>(store: S, checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    let down = Arc::new(AtomicBool::new(false));
    let flaky = Flaky {
        inner: checkpoints.clone(),
        down: down.clone(),
    };
    append_markers(&store, 0..10).await;
    let ledger = Ledger::default();
    let handle = ProjectionRunner::new(store.clone(), Recorder::new(&ledger), flaky)
        .with_options(by_count(5))
        .start();
    processed(&handle, 10).await;
    saved_through(&checkpoints, 10).await;

    down.store(true, Ordering::SeqCst);
    append_markers(&store, 10..20).await;
    let waiting = wait_until(&handle, "standby during the outage", |s| {
        s.state == ProjectionState::Standby
    })
    .await;
    assert!(
        waiting
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("took the checkpoint store down")),
        "{waiting:?}"
    );
    let saved = checkpoints.load(NAME).await.unwrap().unwrap();
    assert_eq!(
        saved.events_processed, 10,
        "nothing saved during the outage"
    );

    down.store(false, Ordering::SeqCst);
    let status = wait_until(&handle, "all 20 events after the outage", |s| {
        s.state == ProjectionState::Running && s.events_processed >= 20
    })
    .await;
    assert_eq!(status.events_processed, 20);
    handle.stop().await.unwrap();
    let state = ledger.snapshot();
    assert_eq!(state.markers, (0..20).collect::<Vec<_>>());
    let saved = checkpoints.load(NAME).await.unwrap().unwrap();
    assert_eq!(
        (saved.state, saved.events_processed),
        (ProjectionState::Stopped, 20)
    );
}

/// Waits until the saved checkpoint covers `events` events.
async fn saved_through<K: CheckpointStore>(checkpoints: &K, events: u64) {
    let saved = async {
        loop {
            match checkpoints.load(NAME).await {
                Ok(Some(saved)) if saved.events_processed >= events => return,
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    };
    tokio::time::timeout(super::WAIT_LIMIT, saved)
        .await
        .expect("the checkpoint is saved");
}

/// A leadership whose current lease the test can revoke, as a lost lock
/// connection does: the holder's checks fail, and the next runner gets a
/// newer fence.
#[derive(Debug, Clone, Default)]
struct Revocable(Arc<Mutex<Leases>>);

#[derive(Debug, Default)]
struct Leases {
    holder: Option<u64>,
    generation: u64,
}

/// A lease of [`Revocable`]: its generation.
#[derive(Debug)]
struct RevocableLease {
    generation: u64,
    leases: Arc<Mutex<Leases>>,
}

impl Drop for RevocableLease {
    fn drop(&mut self) {
        let mut leases = self.leases.lock().unwrap();
        if leases.holder == Some(self.generation) {
            leases.holder = None;
        }
    }
}

impl Revocable {
    fn take(&self) -> Option<RevocableLease> {
        let mut leases = self.0.lock().unwrap();
        if leases.holder.is_some() {
            return None;
        }
        leases.generation += 1;
        leases.holder = Some(leases.generation);
        Some(RevocableLease {
            generation: leases.generation,
            leases: self.0.clone(),
        })
    }

    /// The current holder loses its lease; the next one to try gets it.
    fn revoke(&self) {
        self.0.lock().unwrap().holder = None;
    }
}

impl Leadership for Revocable {
    type Lease = RevocableLease;

    async fn acquire(&self, _name: &str) -> Result<RevocableLease, StoreError> {
        loop {
            if let Some(lease) = self.take() {
                return Ok(lease);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn try_acquire(&self, _name: &str) -> Result<Option<RevocableLease>, StoreError> {
        Ok(self.take())
    }

    async fn holds(&self, lease: &mut RevocableLease) -> bool {
        self.0.lock().unwrap().holder == Some(lease.generation)
    }

    fn fence(&self, lease: &RevocableLease) -> Option<FencingToken> {
        Some(FencingToken::new(lease.generation))
    }
}

/// The leader loses its lease: it applies nothing more, waits in standby,
/// and the new leader resumes from the checkpoint, fenced.
pub async fn a_runner_that_lost_its_lease_applies_nothing_more<S, K>(store: S, checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    let leadership = Revocable::default();
    let (first, second) = (Ledger::default(), Ledger::default());
    let start = |ledger: &Ledger| {
        ProjectionRunner::new(store.clone(), Recorder::new(ledger), checkpoints.clone())
            .with_leadership(leadership.clone())
            .with_options(by_count(4))
            .start()
    };
    append_markers(&store, 0..10).await;
    let old = start(&first);
    processed(&old, 10).await;
    let new = start(&second);
    assert_eq!(new.status().state, ProjectionState::Standby);

    leadership.revoke();
    wait_until(&new, "the new leader takes over", |s| {
        s.state == ProjectionState::Running
    })
    .await;
    append_markers(&store, 10..20).await;
    processed(&new, 20).await;
    let old_status = wait_until(&old, "the old leader in standby", |s| {
        s.state == ProjectionState::Standby
    })
    .await;
    assert_eq!(
        first.snapshot().markers,
        (0..10).collect::<Vec<_>>(),
        "the old leader applied events after losing its lease"
    );
    assert!(old_status.last_error.is_some(), "{old_status:?}");
    assert_eq!(
        second.snapshot().markers,
        (8..20).collect::<Vec<_>>(),
        "the new leader resumes after the old one's last checkpoint (8)"
    );
    let saved = checkpoints.load(NAME).await.unwrap().unwrap();
    assert_eq!(saved.fence, Some(FencingToken::new(2)));

    new.stop().await.unwrap();
    wait_until(&old, "the old runner leads again", |s| {
        s.state == ProjectionState::Running
    })
    .await;
    old.stop().await.unwrap();
    let saved = checkpoints.load(NAME).await.unwrap().unwrap();
    assert_eq!(
        (saved.fence, saved.events_processed, saved.state),
        (Some(FencingToken::new(3)), 20, ProjectionState::Stopped)
    );
}

/// Pause, resume and rebuild asked through the checkpoint store, as another
/// process would: the leader carries each out; a pause outlives a crash.
pub async fn an_operator_steers_a_projection_through_the_checkpoint_store<S, K>(
    store: S,
    checkpoints: K,
) where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    let ledger = Ledger::default();
    let options = by_count(1000).poll_requests_every(Duration::from_millis(10));
    let start = || {
        ProjectionRunner::new(store.clone(), Recorder::new(&ledger), checkpoints.clone())
            .with_options(options.clone())
            .start()
    };
    append_markers(&store, 0..5).await;
    let handle = start();
    processed(&handle, 5).await;

    checkpoints
        .request(NAME, ProjectionRequest::Pause)
        .await
        .unwrap();
    wait_until(&handle, "paused by request", |s| {
        s.state == ProjectionState::Paused
    })
    .await;
    let saved = checkpoints.load(NAME).await.unwrap().unwrap();
    assert_eq!(saved.state, ProjectionState::Paused);
    wait_for_no_request(&checkpoints).await;
    append_markers(&store, 5..8).await;

    // A crash while paused: the next runner starts paused.
    handle.abort();
    let handle = start();
    let status = wait_until(&handle, "paused after a restart", |s| {
        s.state == ProjectionState::Paused
    })
    .await;
    assert_eq!(status.events_processed, 5);
    checkpoints
        .request(NAME, ProjectionRequest::Resume)
        .await
        .unwrap();
    processed(&handle, 8).await;
    wait_for_no_request(&checkpoints).await;
    assert_eq!(ledger.snapshot().markers, (0..8).collect::<Vec<_>>());

    checkpoints
        .request(NAME, ProjectionRequest::Rebuild)
        .await
        .unwrap();
    // Cleared once the reset checkpoint is saved: the rebuild has begun.
    wait_for_no_request(&checkpoints).await;
    wait_until(&handle, "the rebuild caught up", |s| {
        s.state == ProjectionState::Running && s.events_processed == 8
    })
    .await;
    handle.stop().await.unwrap();
    let state = ledger.snapshot();
    assert_eq!(state.markers, (0..8).collect::<Vec<_>>());
    assert_eq!(
        state.applications, 8,
        "the rebuild reset the read model first"
    );
}

/// Waits until the leader has cleared the pending request.
async fn wait_for_no_request<K: CheckpointStore>(checkpoints: &K) {
    let cleared = async {
        while checkpoints.pending_request(NAME).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(super::WAIT_LIMIT, cleared)
        .await
        .expect("the request is carried out and cleared");
}
