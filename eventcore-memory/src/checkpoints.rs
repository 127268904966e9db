//! Projection checkpoints kept in memory.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use eventcore::{Checkpoint, CheckpointStore, StoreError};

/// A [`CheckpointStore`] in memory; clones share the checkpoints.
///
/// Like [`InMemoryEventStore`](crate::InMemoryEventStore), it lives as long
/// as the process: for tests, prototypes and the memory demo.
#[derive(Debug, Clone, Default)]
pub struct InMemoryCheckpointStore {
    saved: Arc<Mutex<BTreeMap<String, Checkpoint>>>,
}

impl InMemoryCheckpointStore {
    /// An empty checkpoint store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Checkpoint>) -> T) -> T {
        // A panic elsewhere cannot leave a half-written map: every change is one insert.
        let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut saved)
    }
}

impl CheckpointStore for InMemoryCheckpointStore {
    async fn load(&self, name: &str) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self.with(|saved| saved.get(name).cloned()))
    }

    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.with(|saved| saved.insert(checkpoint.name.clone(), checkpoint.clone()));
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(self.with(|saved| saved.values().cloned().collect()))
    }
}
