//! `streams`, `stream` and `tail`: what is in the store, what just happened.

use std::{io::Write, num::NonZeroUsize};

use clap::Args;
use eventcore::{
    EventStore, EventType, GlobalPosition, ReadAllQuery, StreamId, StreamQuery, StreamVersion,
};
use serde_json::json;

use super::{Context, not_found};
use crate::{
    failure::Failure,
    output::{self, EVENT_HEADER, Table, event_json, event_row},
};

#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Only streams whose id starts with this.
    #[arg(long)]
    prefix: Option<String>,
    /// At most this many streams.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// How many of the latest events to look at (bounds the cost).
    #[arg(long, default_value_t = eventcore_postgres::DEFAULT_RECENT_EVENTS)]
    recent: u64,
}

pub async fn streams(context: &Context, args: &StreamsArgs) -> Result<(), Failure> {
    let streams = context
        .store
        .most_active_streams(args.recent, args.limit, args.prefix.as_deref())
        .await?;
    if context.json {
        let rows: Vec<_> = streams
            .iter()
            .map(|s| json!({ "stream_id": s.stream_id, "recent_events": s.events, "version": s.version }))
            .collect();
        return output::json(&json!({ "recent": args.recent, "streams": rows }))
            .map_err(Failure::other);
    }
    if streams.is_empty() {
        println!("no streams among the latest {} events", args.recent);
        return Ok(());
    }
    let mut table = Table::new(&["STREAM", "RECENT EVENTS", "VERSION"]);
    for s in &streams {
        table.row(vec![
            s.stream_id.to_string(),
            s.events.to_string(),
            s.version.to_string(),
        ]);
    }
    table.print().map_err(Failure::other)
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    /// The stream's id.
    id: String,
    /// Start at this version (included).
    #[arg(long, conflicts_with = "last")]
    from_version: Option<u64>,
    /// The last N events, newest first.
    #[arg(long)]
    last: Option<NonZeroUsize>,
    /// Only events of this type (repeatable).
    #[arg(long = "type")]
    types: Vec<String>,
    /// At most this many events (a page; the output says how to get the next).
    #[arg(long, default_value = "100")]
    limit: NonZeroUsize,
}

fn stream_id(id: &str) -> Result<StreamId, Failure> {
    StreamId::try_new(id).map_err(|e| Failure::input(format!("{id:?} is not a stream id: {e}")))
}

fn event_types(names: &[String]) -> Result<Option<Vec<EventType>>, Failure> {
    if names.is_empty() {
        return Ok(None);
    }
    names
        .iter()
        .map(|n| {
            EventType::try_new(n.as_str())
                .map_err(|e| Failure::input(format!("{n:?} is not an event type: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

pub async fn stream(context: &Context, args: &StreamArgs) -> Result<(), Failure> {
    let id = stream_id(&args.id)?;
    let mut query = match args.last {
        Some(last) => StreamQuery::last(id.clone(), last),
        None => StreamQuery::forwards(id.clone()).limit(args.limit),
    };
    if let Some(version) = args.from_version {
        query = query.from_version(StreamVersion::new(version));
    }
    query.event_types = event_types(&args.types)?;
    let page = context.store.read_stream(&query).await?;
    if page.stream_version == StreamVersion::INITIAL {
        return Err(not_found(format!(
            "stream {id} has no events in schema {} (`eventcore streams --prefix ...` lists streams)",
            context.store.schema()
        )));
    }
    let next = page.next.as_ref().and_then(|q| q.from);
    if context.json {
        return output::json(&json!({
            "stream_id": id,
            "version": page.stream_version,
            "events": page.events.iter().map(event_json).collect::<Vec<_>>(),
            "next_from_version": next,
        }))
        .map_err(Failure::other);
    }
    println!("stream {id} at version {}", page.stream_version);
    if page.events.is_empty() {
        println!("no events match");
    } else {
        let mut table = Table::new(EVENT_HEADER);
        for event in &page.events {
            table.row(event_row(event));
        }
        table.print().map_err(Failure::other)?;
    }
    if let Some(from) = next {
        let direction = if args.last.is_some() {
            format!(" --last {}", query.limit)
        } else {
            String::new()
        };
        println!("more: eventcore stream {id} --from-version {from}{direction}");
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Start after this position (`transaction:sequence`, as printed by
    /// `stream` and `tail`); without it, after the newest event.
    #[arg(long, conflicts_with = "from_start")]
    after: Option<String>,
    /// Start from the first event.
    #[arg(long)]
    from_start: bool,
    /// Only events of this type (repeatable).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Only events of streams whose id starts with this.
    #[arg(long)]
    stream_prefix: Option<String>,
    /// Stop after this many events (default: follow until Ctrl-C).
    #[arg(long)]
    count: Option<u64>,
}

pub fn position(text: &str) -> Result<GlobalPosition, Failure> {
    text.parse::<GlobalPosition>().map_err(|e| {
        Failure::input(format!(
            "{e} (positions are printed by `eventcore tail` and `eventcore stream`)"
        ))
    })
}

pub async fn tail(context: &Context, args: &TailArgs) -> Result<(), Failure> {
    let after = match (&args.after, args.from_start) {
        (Some(text), _) => position(text)?,
        (None, true) => GlobalPosition::START,
        (None, false) => context.store.head().await?.unwrap_or(GlobalPosition::START),
    };
    let mut query = ReadAllQuery::after(after);
    query.event_types = event_types(&args.types)?;
    let mut subscription = context.store.subscribe(query);
    // On stderr whatever the format: stdout carries only events.
    eprintln!(
        "following schema {} after {after} (Ctrl-C stops)",
        context.store.schema()
    );
    let mut shown = 0u64;
    let mut out = std::io::stdout().lock();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while args.count.is_none_or(|count| shown < count) {
        let next = tokio::select! {
            _ = &mut ctrl_c => break,
            next = subscription.next_event() => next,
        };
        let event = match next {
            Some(Ok(event)) => event,
            Some(Err(error)) => return Err(error.into()),
            None => break,
        };
        if args
            .stream_prefix
            .as_deref()
            .is_some_and(|p| !event.stream_id.as_ref().starts_with(p))
        {
            continue;
        }
        shown += 1;
        let line = if context.json {
            event_json(&event).to_string()
        } else {
            event_row(&event).join("  ")
        };
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(Failure::other)?;
    }
    eprintln!("{shown} events shown");
    Ok(())
}
