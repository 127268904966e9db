//! Projection leadership among runners in one process.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, PoisonError},
};

use eventcore::{Leadership, StoreError};
use tokio::sync::Notify;

/// A [`Leadership`] for runners in one process: one lease per projection
/// name; clones share the leases.
#[derive(Debug, Clone, Default)]
pub struct InMemoryLeadership {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    held: Mutex<BTreeSet<String>>,
    released: Notify,
}

/// Leadership of one projection name; dropping it hands leadership on.
#[derive(Debug)]
pub struct InMemoryLease {
    name: String,
    shared: Arc<Shared>,
}

impl Drop for InMemoryLease {
    fn drop(&mut self) {
        self.shared
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.name);
        self.shared.released.notify_waiters();
    }
}

impl InMemoryLeadership {
    /// Leadership with no lease held.
    pub fn new() -> Self {
        Self::default()
    }

    fn take(&self, name: &str) -> Option<InMemoryLease> {
        let acquired = self
            .shared
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned());
        acquired.then(|| InMemoryLease {
            name: name.to_owned(),
            shared: self.shared.clone(),
        })
    }
}

impl Leadership for InMemoryLeadership {
    type Lease = InMemoryLease;

    async fn acquire(&self, name: &str) -> Result<InMemoryLease, StoreError> {
        loop {
            // Registered before the attempt, so a release in between is not missed.
            let released = self.shared.released.notified();
            if let Some(lease) = self.take(name) {
                return Ok(lease);
            }
            released.await;
        }
    }

    async fn try_acquire(&self, name: &str) -> Result<Option<InMemoryLease>, StoreError> {
        Ok(self.take(name))
    }

    async fn holds(&self, _lease: &mut InMemoryLease) -> bool {
        // In one process a lease ends only when it is dropped.
        true
    }
}
