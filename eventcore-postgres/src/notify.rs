//! Wake-ups for subscriptions: one LISTEN connection per store, shared by
//! all its subscriptions, with polling as the fallback.
//!
//! The listening connection is opened on its own, never taken from the
//! store's pools, so subscriptions cost commands no connection however many
//! there are. It is opened when the first subscription waits, reconnected
//! with backoff when it drops (subscriptions poll meanwhile), and closed
//! when the last subscription is dropped.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use eventcore::AppendNotifier;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::watch;

/// The first pause before reconnecting a dropped listener; doubles up to [`MAX_RECONNECT_PAUSE`].
const MIN_RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two attempts to reconnect the listener.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(5);

/// The store's one listener: a counter of notifications that every
/// subscription of the store watches.
#[derive(Debug)]
pub(crate) struct ListenerHub {
    options: PgConnectOptions,
    channel: String,
    /// The running listener task's sender, while any subscription watches.
    sender: Mutex<Option<Arc<watch::Sender<u64>>>>,
}

impl ListenerHub {
    pub(crate) fn new(options: PgConnectOptions, channel: String) -> Self {
        Self {
            options,
            channel,
            sender: Mutex::new(None),
        }
    }

    /// A receiver of the notification counter, starting the listener task if none runs.
    fn watch(self: &Arc<Self>) -> watch::Receiver<u64> {
        let mut sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = sender.as_ref() {
            return running.subscribe();
        }
        let (tx, rx) = watch::channel(0_u64);
        let tx = Arc::new(tx);
        *sender = Some(tx.clone());
        tokio::spawn(self.clone().listen(tx));
        rx
    }

    /// Listens until no subscription watches any more, reconnecting with backoff.
    async fn listen(self: Arc<Self>, tx: Arc<watch::Sender<u64>>) {
        let mut pause = MIN_RECONNECT_PAUSE;
        loop {
            let listener = tokio::select! {
                () = self.retired(&tx) => return,
                listener = self.connect() => listener,
            };
            let mut listener = match listener {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::debug!(%error, "no listener connection; subscriptions poll");
                    tokio::select! {
                        () = self.retired(&tx) => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
                    continue;
                }
            };
            pause = MIN_RECONNECT_PAUSE;
            let _held = crate::telemetry::Held::listener();
            // Something may have been appended while no one listened.
            tx.send_modify(|n| *n = n.wrapping_add(1));
            loop {
                tokio::select! {
                    () = self.retired(&tx) => return,
                    received = listener.try_recv() => match received {
                        Ok(Some(_)) => tx.send_modify(|n| *n = n.wrapping_add(1)),
                        Ok(None) | Err(_) => {
                            tracing::debug!("listener connection lost; reconnecting");
                            break;
                        }
                    },
                }
            }
        }
    }

    /// Resolves once no subscription watches and none can start watching
    /// this task's sender any more (see [`retire`](Self::retire)); a
    /// subscription arriving in between keeps it waiting.
    async fn retired(&self, tx: &Arc<watch::Sender<u64>>) {
        loop {
            tx.closed().await;
            // Someone may have subscribed meanwhile: then wait for them too.
            if self.retire(tx) {
                return;
            }
        }
    }

    /// A fresh connection (a pool of its own, of one) listening on the channel.
    async fn connect(&self) -> Result<PgListener, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(self.options.clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(&self.channel).await?;
        Ok(listener)
    }

    /// Ends the task if still no one watches: under the lock, so a
    /// subscription arriving now either got this sender before or starts a new task.
    fn retire(&self, tx: &Arc<watch::Sender<u64>>) -> bool {
        let mut sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        if tx.receiver_count() > 0 {
            return false;
        }
        if sender.as_ref().is_some_and(|s| Arc::ptr_eq(s, tx)) {
            *sender = None;
        }
        true
    }
}

/// Resolves on a notification from an append, or after the poll interval,
/// whichever comes first. A lost notification, or a listener that cannot
/// connect, only delays delivery until the next poll.
pub(crate) struct PgNotifier {
    hub: Arc<ListenerHub>,
    poll_interval: Duration,
    notifications: Option<watch::Receiver<u64>>,
}

impl PgNotifier {
    pub(crate) fn new(hub: Arc<ListenerHub>, poll_interval: Duration) -> Self {
        Self {
            hub,
            poll_interval,
            notifications: None,
        }
    }
}

impl AppendNotifier for PgNotifier {
    fn mark_seen(&mut self) {
        if let Some(notifications) = &mut self.notifications {
            notifications.mark_unchanged();
        }
    }

    async fn appended(&mut self) {
        let Some(notifications) = &mut self.notifications else {
            // The first wait: start watching (in the runtime, which the
            // subscription's first read needed anyway), and read again at
            // once, since nothing watched since that read.
            self.notifications = Some(self.hub.watch());
            return;
        };
        tokio::select! {
            changed = notifications.changed() => {
                if changed.is_err() {
                    // The listener task is gone; watch again on the next wait.
                    self.notifications = None;
                }
            }
            () = tokio::time::sleep(self.poll_interval) => {}
        }
    }
}
