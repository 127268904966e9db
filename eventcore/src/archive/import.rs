//! Reading an archive into a store, keeping ids, versions and times.

use std::{future::Future, io::BufRead, num::NonZeroUsize};

use super::{ArchiveError, ArchiveReader, ArchivedEvent};
use crate::{EventId, EventStore, ReadAllQuery, StoreError, StreamId, StreamVersion};

/// A store that can take archived events as they are: with their ids,
/// versions and recorded times (both EventCore stores can).
pub trait ImportTarget: EventStore {
    /// Writes `events`, in their order, atomically: all that are not
    /// stored yet, or none.
    ///
    /// An event whose id is already stored at the same stream and version
    /// is skipped (so a batch may be written twice); any other event must
    /// be the next version of its stream, counting the batch's own events
    /// before it. New events are delivered after every event stored
    /// before, in the batch's order, and wake subscriptions.
    fn import_batch(
        &self,
        events: &[ArchivedEvent],
    ) -> impl Future<Output = Result<ImportedBatch, BatchError>> + Send;
}

/// What one [`ImportTarget::import_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportedBatch {
    /// Events written.
    pub written: u64,
    /// Events already stored, left as they were.
    pub skipped: u64,
}

/// Why an [`ImportTarget`] refused an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportProblem {
    /// An event with the same id is stored elsewhere.
    #[error("an event with this id is already stored as {stream_id} version {version}")]
    IdElsewhere {
        /// Where the stored event is.
        stream_id: StreamId,
        /// Its version there.
        version: StreamVersion,
    },
    /// The event's version does not follow its stream's.
    #[error(
        "its stream is at version {current} in the target, so the next event there must be \
         version {}",
        current.value() + 1
    )]
    VersionGap {
        /// The stream's version before the event (in the target, with the
        /// batch's earlier events).
        current: StreamVersion,
    },
}

/// Why an [`ImportTarget::import_batch`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The event at `index` of the batch cannot be written.
    #[error("event {index} of the batch: {problem}")]
    Refused {
        /// Its index in the batch.
        index: usize,
        /// Why.
        problem: ImportProblem,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How [`import`] treats a target that already holds events.
///
/// ```
/// use eventcore::archive::ImportOptions;
///
/// // Into a store that already holds events: only streams the archive
/// // continues exactly, or new ones, are accepted.
/// let options = ImportOptions { append: true, ..ImportOptions::default() };
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportOptions {
    /// Add the archive's events after whatever the target holds. Without
    /// it a target must be empty, or hold the archive's first events (an
    /// import that was interrupted: it resumes).
    pub append: bool,
    /// Events written per transaction.
    pub batch_size: NonZeroUsize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            append: false,
            batch_size: crate::DEFAULT_PAGE_SIZE,
        }
    }
}

/// What [`import`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportSummary {
    /// Events read from the archive.
    pub read: u64,
    /// Events written to the target.
    pub written: u64,
    /// Events the target held already (an import resumed or repeated).
    pub skipped: u64,
}

/// Why [`import`] stopped. Every batch written before stays written (for
/// a line that is not an archived event, every event before it); running
/// the import again resumes after them.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The archive could not be read, or a line is not an archived event.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The target could not be read or written.
    #[error("the import target failed")]
    Store(#[source] StoreError),
    /// The target cannot take an event of the archive.
    #[error(
        "line {line} of the archive (event {id}, {stream_id} version {version}) cannot be \
         imported: {problem}"
    )]
    Refused {
        /// The event's line in the archive.
        line: u64,
        /// Its id.
        id: EventId,
        /// Its stream.
        stream_id: StreamId,
        /// Its version.
        version: StreamVersion,
        /// Why.
        problem: ImportProblem,
    },
    /// The target holds events that are not the archive's first ones.
    #[error(
        "the target already holds events, and its event {stored} is not the archive's \
         (line {line} {found}): import into an empty target, or append the archive's \
         events after what it holds (ImportOptions::append, `eventcore import --append`)"
    )]
    NotEmpty {
        /// The first stored event that differs.
        stored: EventId,
        /// The archive's line it was compared with.
        line: u64,
        /// What the archive has there.
        found: String,
    },
}

/// Reads the archive in `archive` into `target`, batch by batch, keeping
/// every event's id, stream, version, recorded time, schema version and
/// metadata, and the archive's order as the target's global order;
/// `progress` is called after every batch.
///
/// Safe to run again after an interruption: events already written are
/// recognized by id and skipped, nothing is doubled. A target that holds
/// other events is refused unless [`ImportOptions::append`] is set.
///
/// ```
/// use eventcore::{EventStore, ReadAllQuery, archive::{ImportOptions, import}};
/// use eventcore_memory::InMemoryEventStore;
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let archive = r#"{"id":"0192e0a0-0000-7000-8000-000000000001","stream_id":"account-1","version":1,"event_type":"Opened","recorded_at":"2026-12-01T10:00:00Z","payload":{},"metadata":{}}
/// "#;
/// let store = InMemoryEventStore::new();
/// let summary = import(&store, archive.as_bytes(), &ImportOptions::default(), |_| {}).await?;
/// assert_eq!(summary.written, 1);
/// // Again: nothing doubled.
/// let again = import(&store, archive.as_bytes(), &ImportOptions::default(), |_| {}).await?;
/// assert_eq!((again.written, again.skipped), (0, 1));
/// assert_eq!(store.read_all(&ReadAllQuery::from_start()).await?.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// See [`ImportError`].
pub async fn import<T, R, P>(
    target: &T,
    archive: R,
    options: &ImportOptions,
    mut progress: P,
) -> Result<ImportSummary, ImportError>
where
    T: ImportTarget + ?Sized,
    R: BufRead,
    P: FnMut(&ImportSummary),
{
    let mut lines = ArchiveReader::new(archive);
    let mut summary = ImportSummary::default();
    let mut pending = Pending::default();
    if !options.append {
        // The target must hold nothing but the archive's first events.
        // What it holds is only compared here; those events are passed to
        // the batches, which skip them, so a target whose reads lag its
        // writes (PostgreSQL's gap-safe order) is still resumed correctly.
        let mut query = ReadAllQuery::from_start().page_size(options.batch_size);
        loop {
            let page = target.read_all(&query).await.map_err(ImportError::Store)?;
            let Some(last) = page.last() else { break };
            query.after = last.position;
            for stored in page {
                let found = match lines.next() {
                    Some(Ok(event)) if event.id == stored.id => {
                        pending.push(lines.line(), event);
                        if pending.events.len() >= options.batch_size.get() {
                            pending.write(target, &mut summary).await?;
                            progress(&summary);
                        }
                        continue;
                    }
                    Some(Ok(event)) => format!("has event {}", event.id),
                    Some(Err(error)) => return Err(error.into()),
                    None => "has ended".to_owned(),
                };
                return Err(ImportError::NotEmpty {
                    stored: stored.id,
                    line: lines.line() + u64::from(found == "has ended"),
                    found,
                });
            }
        }
    }
    while let Some(event) = lines.next() {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                // What comes before a bad line is imported: fixed, the
                // archive is imported again from there.
                if !pending.events.is_empty() {
                    pending.write(target, &mut summary).await?;
                    progress(&summary);
                }
                return Err(error.into());
            }
        };
        pending.push(lines.line(), event);
        if pending.events.len() >= options.batch_size.get() {
            pending.write(target, &mut summary).await?;
            progress(&summary);
        }
    }
    if !pending.events.is_empty() {
        pending.write(target, &mut summary).await?;
        progress(&summary);
    }
    Ok(summary)
}

/// The events of the next batch and their lines in the archive.
#[derive(Default)]
struct Pending {
    events: Vec<ArchivedEvent>,
    lines: Vec<u64>,
}

impl Pending {
    fn push(&mut self, line: u64, event: ArchivedEvent) {
        self.events.push(event);
        self.lines.push(line);
    }

    /// Writes the batch and starts the next.
    async fn write<T: ImportTarget + ?Sized>(
        &mut self,
        target: &T,
        summary: &mut ImportSummary,
    ) -> Result<(), ImportError> {
        let events = std::mem::take(&mut self.events);
        let lines = std::mem::take(&mut self.lines);
        summary.read += events.len() as u64;
        match target.import_batch(&events).await {
            Ok(done) => {
                summary.written += done.written;
                summary.skipped += done.skipped;
                Ok(())
            }
            Err(BatchError::Store(error)) => Err(ImportError::Store(error)),
            Err(BatchError::Refused { index, problem }) => {
                match (events.get(index), lines.get(index)) {
                    (Some(event), Some(&line)) => Err(ImportError::Refused {
                        line,
                        id: event.id,
                        stream_id: event.stream_id.clone(),
                        version: event.version,
                        problem,
                    }),
                    _ => Err(ImportError::Store(StoreError::Backend {
                        reason: format!(
                            "the import target refused event {index} of a batch of {}",
                            events.len()
                        ),
                        source: None,
                    })),
                }
            }
        }
    }
}
