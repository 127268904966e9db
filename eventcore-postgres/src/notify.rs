//! Wake-ups for subscriptions: LISTEN/NOTIFY, with polling as the fallback.

use std::time::Duration;

use eventcore::AppendNotifier;
use sqlx::{PgPool, postgres::PgListener};

/// Resolves on a notification from an append, or after the poll interval,
/// whichever comes first. A lost notification, or a listener that cannot
/// connect, only delays delivery until the next poll.
pub(crate) struct PgNotifier {
    pool: PgPool,
    channel: String,
    poll_interval: Duration,
    listener: Option<PgListener>,
}

impl PgNotifier {
    pub(crate) fn new(pool: PgPool, channel: String, poll_interval: Duration) -> Self {
        Self {
            pool,
            channel,
            poll_interval,
            listener: None,
        }
    }

    async fn listen(&mut self) {
        if self.listener.is_some() {
            return;
        }
        match PgListener::connect_with(&self.pool).await {
            Ok(mut listener) => match listener.listen(&self.channel).await {
                Ok(()) => self.listener = Some(listener),
                Err(error) => tracing::debug!(%error, "LISTEN failed; polling"),
            },
            Err(error) => tracing::debug!(%error, "no listener connection; polling"),
        }
    }
}

impl AppendNotifier for PgNotifier {
    fn mark_seen(&mut self) {
        if let Some(listener) = &mut self.listener {
            while listener.next_buffered().is_some() {}
        }
    }

    async fn appended(&mut self) {
        self.listen().await;
        let poll = tokio::time::sleep(self.poll_interval);
        match &mut self.listener {
            Some(listener) => {
                tokio::select! {
                    received = listener.recv() => {
                        if received.is_err() {
                            // The connection dropped: reconnect on the next wait.
                            self.listener = None;
                        }
                    }
                    () = poll => {}
                }
            }
            None => poll.await,
        }
    }
}
