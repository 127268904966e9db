//! Projection leadership among runners in one process.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, PoisonError},
};

use eventcore::{FencingToken, Leadership, StoreError};
use tokio::sync::Notify;

/// A [`Leadership`](eventcore::Leadership) for runners in one process: one lease per projection
/// name; clones share the leases. Each lease's fencing token is one more
/// than the previous lease's of the same name.
///
/// ```
/// use eventcore::Leadership;
/// use eventcore_memory::InMemoryLeadership;
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let leadership = InMemoryLeadership::new();
/// let first = leadership.try_acquire("balances").await?.expect("free");
/// assert!(leadership.try_acquire("balances").await?.is_none(), "one leader");
/// let first_fence = leadership.fence(&first);
/// drop(first); // hands leadership on
/// let second = leadership.try_acquire("balances").await?.expect("free again");
/// assert!(leadership.fence(&second) > first_fence, "newer leaders fence older ones out");
/// # Ok::<(), eventcore::StoreError>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryLeadership {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    held: Mutex<Held>,
    released: Notify,
}

#[derive(Debug, Default)]
struct Held {
    names: BTreeSet<String>,
    generations: BTreeMap<String, u64>,
}

/// Leadership of one projection name; dropping it hands leadership on.
///
/// ```
/// use eventcore::Leadership;
/// use eventcore_memory::InMemoryLeadership;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let leadership = InMemoryLeadership::new();
/// let mut lease = leadership.try_acquire("balances").await?.expect("nobody leads yet");
/// assert!(leadership.holds(&mut lease).await);
/// assert!(leadership.try_acquire("balances").await?.is_none());
/// drop(lease); // hands leadership on
/// assert!(leadership.try_acquire("balances").await?.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct InMemoryLease {
    name: String,
    fence: FencingToken,
    shared: Arc<Shared>,
}

impl Drop for InMemoryLease {
    fn drop(&mut self) {
        self.shared
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .names
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
        let mut held = self
            .shared
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !held.names.insert(name.to_owned()) {
            return None;
        }
        let generation = held.generations.entry(name.to_owned()).or_default();
        *generation += 1;
        Some(InMemoryLease {
            name: name.to_owned(),
            fence: FencingToken::new(*generation),
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

    fn fence(&self, lease: &InMemoryLease) -> Option<FencingToken> {
        Some(lease.fence)
    }
}
