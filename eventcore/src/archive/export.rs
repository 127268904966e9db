//! Writing a store's global order to an archive.

use std::{io::Write, num::NonZeroUsize};

use super::ArchivedEvent;
use crate::{EventStore, EventType, GlobalPosition, ReadAllQuery, StoreError};

/// Which events [`export`] writes.
///
/// ```
/// use eventcore::{EventType, archive::ExportOptions};
///
/// // Only the accounts' deposits, from the start.
/// let options = ExportOptions {
///     stream_prefix: Some("account-".into()),
///     event_types: Some(vec![EventType::try_new("Deposited")?]),
///     ..ExportOptions::default()
/// };
/// # let _ = options;
/// # Ok::<(), eventcore::InvalidEventType>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Only events after this position ([`GlobalPosition::START`]: all).
    pub after: GlobalPosition,
    /// Only events of streams whose id starts with this.
    pub stream_prefix: Option<String>,
    /// Only events of these types (`None`: all).
    pub event_types: Option<Vec<EventType>>,
    /// Events read per page of the global order.
    pub page_size: NonZeroUsize,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            after: GlobalPosition::START,
            stream_prefix: None,
            event_types: None,
            page_size: crate::DEFAULT_PAGE_SIZE,
        }
    }
}

/// What [`export`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportSummary {
    /// Events written.
    pub events: u64,
    /// Events read (written or left out by the stream prefix).
    pub read: u64,
    /// The position of the last event read: pass it as
    /// [`ExportOptions::after`] to export what was appended since.
    pub last_position: Option<GlobalPosition>,
}

/// Why [`export`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store could not be read.
    #[error("could not read the events to export")]
    Store(#[source] StoreError),
    /// The archive could not be written.
    #[error("could not write the archive")]
    Io(#[from] std::io::Error),
}

/// Writes the events of `store` that `options` select to `out`, one line
/// each, in global order, until it has caught up with what the store
/// delivers; `progress` is called after every page.
///
/// On PostgreSQL an export delivers what the gap-safe order has made
/// readable: events of a transaction still open when the export catches
/// up are left for the next export (from [`ExportSummary::last_position`]).
///
/// ```
/// use eventcore::{
///     AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent, StreamId,
///     archive::{ArchiveReader, ExportOptions, export},
/// };
/// use eventcore_memory::InMemoryEventStore;
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let store = InMemoryEventStore::new();
/// let event = NewEvent::from_parts(
///     EventType::try_new("Opened")?,
///     serde_json::json!({ "owner": "ada" }),
///     EventMetadata::default(),
/// )?;
/// let stream = StreamId::try_new("account-1")?;
/// store.append(AppendRequest::single(stream, ExpectedVersion::NoStream, vec![event])).await?;
///
/// let mut archive = Vec::new();
/// let summary = export(&store, &ExportOptions::default(), &mut archive, |_| {}).await?;
/// assert_eq!(summary.events, 1);
/// let events: Vec<_> = ArchiveReader::new(archive.as_slice()).collect::<Result<_, _>>()?;
/// assert_eq!(events[0].payload.as_json(), r#"{"owner":"ada"}"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`ExportError::Store`] when the store cannot be read (what was written
/// before stays valid: every line is whole), [`ExportError::Io`] when `out`
/// cannot be written.
pub async fn export<S, W, P>(
    store: &S,
    options: &ExportOptions,
    out: &mut W,
    mut progress: P,
) -> Result<ExportSummary, ExportError>
where
    S: EventStore + ?Sized,
    W: Write,
    P: FnMut(&ExportSummary),
{
    let mut query = ReadAllQuery::after(options.after).page_size(options.page_size);
    query.event_types = options.event_types.clone();
    let mut summary = ExportSummary::default();
    loop {
        let page = store.read_all(&query).await.map_err(ExportError::Store)?;
        let Some(last) = page.last() else {
            break;
        };
        query.after = last.position;
        summary.last_position = Some(last.position);
        for event in &page {
            summary.read += 1;
            let wanted = options
                .stream_prefix
                .as_deref()
                .is_none_or(|prefix| event.stream_id.as_ref().starts_with(prefix));
            if wanted {
                ArchivedEvent::from(event).write_line(out)?;
                summary.events += 1;
            }
        }
        progress(&summary);
    }
    out.flush()?;
    Ok(summary)
}
