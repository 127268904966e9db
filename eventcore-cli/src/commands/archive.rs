//! `export` and `import`: events out to a JSON Lines archive and back in.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Write},
    num::NonZeroUsize,
    path::{Path, PathBuf},
};

use clap::Args;
use eventcore::archive::{self, ExportOptions, ImportOptions, ImportSummary};
use eventcore_memory::InMemoryEventStore;
use serde_json::json;

use super::{Context, browse};
use crate::{failure::Failure, output, progress::Progress};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only events after this position (`transaction:sequence`).
    #[arg(long)]
    after: Option<String>,
    /// Only events of streams whose id starts with this.
    #[arg(long)]
    stream_prefix: Option<String>,
    /// Write the archive here instead of to stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub async fn export(context: &Context, args: &ExportArgs) -> Result<(), Failure> {
    let options = ExportOptions {
        after: args
            .after
            .as_deref()
            .map(browse::position)
            .transpose()?
            .unwrap_or_default(),
        stream_prefix: args.stream_prefix.clone(),
        ..ExportOptions::default()
    };
    let total = match (&args.after, &args.stream_prefix) {
        (None, None) => Some(context.store.totals().await?.events.value),
        _ => None,
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(create(path)?)),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let mut progress = Progress::new("exported", total);
    let summary = archive::export(&context.store, &options, &mut out, |s| {
        progress.update(s.events)
    })
    .await
    .map_err(|e| match e {
        archive::ExportError::Store(store) => Failure::from(store),
        io => Failure::other(io),
    })?;
    drop(out);
    progress.finish(summary.events);
    let watermark = context.store.watermark().await?;
    if watermark.held_back.value > 0 {
        let after = summary
            .last_position
            .map_or_else(String::new, |p| format!(" --after {p}"));
        eprintln!(
            "warning: {} committed events were held back by an open transaction{} and are not \
             in this export; export them later with `eventcore export{after}`",
            watermark.held_back.value,
            watermark
                .holder
                .map_or_else(String::new, |h| format!(" (pid {})", h.pid)),
        );
    }
    if context.json && args.output.is_some() {
        output::json(&json!({
            "events": summary.events,
            "read": summary.read,
            "last_position": summary.last_position.map(|p| p.to_string()),
        }))
        .map_err(Failure::other)?;
    } else if let Some(last) = summary.last_position {
        eprintln!("last position {last}: `--after {last}` exports what comes next");
    }
    Ok(())
}

fn create(path: &Path) -> Result<File, Failure> {
    File::create(path).map_err(|e| Failure::input(format!("cannot write {}: {e}", path.display())))
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The archive (`-` for stdin).
    file: PathBuf,
    /// Add the archive's events after the events the schema holds.
    #[arg(long)]
    append: bool,
    /// Events per transaction.
    #[arg(long, default_value = "1000")]
    batch_size: NonZeroUsize,
    /// Check the archive by loading it into a memory store and save that
    /// to this file (the memory store loads it with `load_jsonl`), instead
    /// of importing into the database.
    #[arg(long)]
    into_file: Option<PathBuf>,
}

impl ImportArgs {
    /// Whether the command needs no database.
    pub fn is_offline(&self) -> bool {
        self.into_file.is_some()
    }
}

fn open(path: &Path) -> Result<Box<dyn BufRead>, Failure> {
    if path == Path::new("-") {
        return Ok(Box::new(BufReader::new(io::stdin())));
    }
    let file = File::open(path)
        .map_err(|e| Failure::input(format!("cannot read {}: {e}", path.display())))?;
    Ok(Box::new(BufReader::new(file)))
}

fn print_summary(summary: &ImportSummary, json: bool, target: &str) -> Result<(), Failure> {
    if json {
        return output::json(&json!({
            "target": target,
            "read": summary.read,
            "written": summary.written,
            "skipped": summary.skipped,
        }))
        .map_err(Failure::other);
    }
    println!(
        "imported into {target}: {} events read, {} written, {} already there",
        summary.read, summary.written, summary.skipped
    );
    Ok(())
}

pub async fn import(context: &Context, args: &ImportArgs) -> Result<(), Failure> {
    let options = ImportOptions {
        append: args.append,
        batch_size: args.batch_size,
    };
    let mut progress = Progress::new("imported", None);
    let summary = archive::import(&context.store, open(&args.file)?, &options, |s| {
        progress.update(s.read);
    })
    .await?;
    progress.finish(summary.read);
    print_summary(
        &summary,
        context.json,
        &format!("schema {}", context.store.schema()),
    )
}

/// `import --into-file`: the archive through a memory store into a file.
pub async fn import_into_file(args: &ImportArgs, json: bool) -> Result<(), Failure> {
    let Some(target) = &args.into_file else {
        return Ok(());
    };
    let store = InMemoryEventStore::load_jsonl(open(&args.file)?).await?;
    let mut out = BufWriter::new(create(target)?);
    let saved = store.save_jsonl(&mut out).await.map_err(Failure::other)?;
    out.flush().map_err(Failure::other)?;
    let summary = ImportSummary {
        read: saved.events,
        written: saved.events,
        skipped: 0,
    };
    print_summary(&summary, json, &target.display().to_string())
}
