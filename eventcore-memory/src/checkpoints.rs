//! Projection checkpoints kept in memory.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use chrono::Utc;
use eventcore::{
    Checkpoint, CheckpointStore, FencingToken, PendingRequest, ProjectionRequest, StoreError,
};

/// A [`CheckpointStore`](eventcore::CheckpointStore) in memory; clones share the checkpoints.
///
/// Like [`InMemoryEventStore`](crate::InMemoryEventStore), it lives as long
/// as the process: for tests, prototypes and the memory demo.
///
/// ```
/// use eventcore::{Checkpoint, CheckpointStore, ProjectionRequest};
/// use eventcore_memory::InMemoryCheckpointStore;
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let checkpoints = InMemoryCheckpointStore::new();
/// assert!(checkpoints.load("balances").await?.is_none());
/// checkpoints.save(&Checkpoint::initial("balances")).await?;
/// // What an operator asks of the running leader:
/// checkpoints.request("balances", ProjectionRequest::Pause).await?;
/// let pending = checkpoints.pending_request("balances").await?;
/// assert_eq!(pending.map(|p| p.request), Some(ProjectionRequest::Pause));
/// # Ok::<(), eventcore::StoreError>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryCheckpointStore {
    saved: Arc<Mutex<Saved>>,
}

#[derive(Debug, Default)]
struct Saved {
    checkpoints: BTreeMap<String, Checkpoint>,
    requests: BTreeMap<String, PendingRequest>,
}

impl InMemoryCheckpointStore {
    /// An empty checkpoint store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Checkpoint>) -> T) -> T {
        // A panic elsewhere cannot leave a half-written map: every change is one insert.
        let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut saved.checkpoints)
    }

    fn with_requests<T>(&self, f: impl FnOnce(&mut Saved) -> T) -> T {
        let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut saved)
    }
}

impl CheckpointStore for InMemoryCheckpointStore {
    async fn load(&self, name: &str) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.with(|saved| saved.get(name).cloned()))
    }

    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.with(|saved| {
            let stored = saved.get(&checkpoint.name).and_then(|c| c.fence);
            if !checkpoint.may_replace(stored) {
                return Err(fenced(checkpoint, stored));
            }
            let mut replacement = checkpoint.clone();
            // An unfenced save keeps the fence a leader claimed.
            replacement.fence = checkpoint.fence.or(stored);
            saved.insert(checkpoint.name.clone(), replacement);
            Ok(())
        })
    }

    async fn claim(
        &self,
        name: &str,
        fence: Option<FencingToken>,
    ) -> Result<Checkpoint, StoreError> {
        self.with(|saved| {
            let mut checkpoint = saved
                .get(name)
                .cloned()
                .unwrap_or_else(|| Checkpoint::initial(name));
            let Some(fence) = fence else {
                return Ok(checkpoint);
            };
            let stored = checkpoint.fence;
            checkpoint.fence = Some(fence);
            if !checkpoint.may_replace(stored) {
                return Err(fenced(&checkpoint, stored));
            }
            saved.insert(name.to_owned(), checkpoint.clone());
            Ok(checkpoint)
        })
    }

    async fn list(&self) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(self.with(|saved| saved.values().cloned().collect()))
    }

    async fn request(&self, name: &str, request: ProjectionRequest) -> Result<(), StoreError> {
        self.with_requests(|saved| {
            saved
                .checkpoints
                .entry(name.to_owned())
                .or_insert_with(|| Checkpoint::initial(name));
            saved.requests.insert(
                name.to_owned(),
                PendingRequest {
                    request,
                    requested_at: Utc::now(),
                },
            );
        });
        Ok(())
    }

    async fn pending_request(&self, name: &str) -> Result<Option<PendingRequest>, StoreError> {
        Ok(self.with_requests(|saved| saved.requests.get(name).copied()))
    }

    async fn clear_request(&self, name: &str, pending: &PendingRequest) -> Result<(), StoreError> {
        self.with_requests(|saved| {
            if saved.requests.get(name) == Some(pending) {
                saved.requests.remove(name);
            }
        });
        Ok(())
    }
}

fn fenced(checkpoint: &Checkpoint, stored: Option<FencingToken>) -> StoreError {
    StoreError::Fenced {
        name: checkpoint.name.clone(),
        stored: stored.unwrap_or(FencingToken::new(0)),
        offered: checkpoint.fence.unwrap_or(FencingToken::new(0)),
    }
}
