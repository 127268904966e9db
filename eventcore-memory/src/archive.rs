//! Saving the memory store's events to an archive and loading them back.

use std::io::{BufRead, Write};

use eventcore::archive::{
    ExportError, ExportOptions, ExportSummary, ImportError, ImportOptions, export, import,
};

use crate::InMemoryEventStore;

impl InMemoryEventStore {
    /// Writes every event, in global order, to `out` in the JSON Lines
    /// archive format of [`eventcore::archive`], as stored (not upcast).
    ///
    /// Load the file with [`load_jsonl`](Self::load_jsonl), or move it to
    /// PostgreSQL with `eventcore import FILE` (or
    /// [`eventcore::archive::import`] on a `PostgresEventStore`). Only
    /// events are saved: snapshots are rebuilt by the commands that use
    /// them, idempotency keys are not carried over, and projections rebuild
    /// their read models from the events.
    ///
    /// ```
    /// use eventcore::{AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent, ReadAllQuery, StreamId};
    /// use eventcore_memory::InMemoryEventStore;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// let store = InMemoryEventStore::new();
    /// let event = NewEvent::from_parts(EventType::try_new("Opened")?, serde_json::json!({}), EventMetadata::default())?;
    /// let stream = StreamId::try_new("account-1")?;
    /// store.append(AppendRequest::single(stream, ExpectedVersion::NoStream, vec![event])).await?;
    ///
    /// let mut file = Vec::new();
    /// store.save_jsonl(&mut file).await?;
    /// let copy = InMemoryEventStore::load_jsonl(file.as_slice()).await?;
    /// let everything = ReadAllQuery::from_start();
    /// assert_eq!(copy.read_all(&everything).await?, store.read_all(&everything).await?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ExportError::Io`] when `out` cannot be written.
    pub async fn save_jsonl<W: Write>(&self, out: &mut W) -> Result<ExportSummary, ExportError> {
        export(
            &self.without_upcasters(),
            &ExportOptions::default(),
            out,
            |_| {},
        )
        .await
    }

    /// A new store holding the events of an archive (from
    /// [`save_jsonl`](Self::save_jsonl) or `eventcore export`), with their
    /// ids, versions, recorded times and metadata, in the archive's order.
    ///
    /// # Errors
    /// [`ImportError`] naming the line of an event that cannot be loaded (a
    /// line that is not an archived event, a version that does not follow
    /// its stream's, an id seen before).
    pub async fn load_jsonl<R: BufRead>(input: R) -> Result<Self, ImportError> {
        let store = Self::new();
        import(&store, input, &ImportOptions::default(), |_| {}).await?;
        Ok(store)
    }
}
