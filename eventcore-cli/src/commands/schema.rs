//! `init`, `migrate` and `status`.

use std::time::Duration;

use eventcore_postgres::{MigrationInfo, ProjectionReport, SchemaStatus};
use serde_json::json;

use super::Context;
use crate::{
    failure::{Failure, Kind},
    output::{self, Table},
};

fn migration_json(m: &MigrationInfo) -> serde_json::Value {
    json!({ "version": m.version, "name": m.name })
}

pub async fn init(context: &Context) -> Result<(), Failure> {
    let before = context.store.schema_status().await?;
    context.store.initialize().await?;
    let after = context.store.schema_status().await?;
    if context.json {
        output::json(&json!({
            "schema": after.schema,
            "version": after.applied,
            "applied": before.pending.iter().map(migration_json).collect::<Vec<_>>(),
        }))
        .map_err(Failure::other)?;
    } else if before.pending.is_empty() {
        println!(
            "schema {} is up to date (migration {})",
            after.schema, after.applied
        );
    } else {
        println!(
            "schema {} initialized: migration {} -> {} ({} applied)",
            after.schema,
            before.applied,
            after.applied,
            before.pending.len()
        );
    }
    Ok(())
}

pub async fn migrate(context: &Context, dry_run: bool) -> Result<(), Failure> {
    if !dry_run {
        return init(context).await;
    }
    let status = context.store.schema_status().await?;
    if context.json {
        output::json(&json!({
            "schema": status.schema,
            "version": status.applied,
            "known": status.known,
            "pending": status.pending.iter().map(migration_json).collect::<Vec<_>>(),
        }))
        .map_err(Failure::other)?;
        return Ok(());
    }
    if status.pending.is_empty() {
        println!(
            "schema {} is at migration {}: nothing to apply",
            status.schema, status.applied
        );
        return Ok(());
    }
    println!(
        "schema {} is at migration {}; `eventcore migrate` would apply (nothing applied now):",
        status.schema, status.applied
    );
    let mut table = Table::new(&["VERSION", "MIGRATION"]);
    for m in &status.pending {
        table.row(vec![m.version.to_string(), m.name.to_owned()]);
    }
    table.print().map_err(Failure::other)
}

/// Refuses to go on with a schema this tool cannot read.
pub async fn require_current(context: &Context) -> Result<SchemaStatus, Failure> {
    let status = context.store.schema_status().await?;
    let schema = &status.schema;
    if status.applied == 0 {
        return Err(Failure::new(
            Kind::Schema,
            format!(
                "schema {schema} holds no EventCore tables: run `eventcore init --schema {schema}` \
                 (or pass the --schema the application uses)"
            ),
        ));
    }
    if status.applied > status.known {
        return Err(Failure::new(
            Kind::Schema,
            format!(
                "schema {schema} is at migration {}, newer than the {} this tool knows: use the \
                 eventcore tool of the release that migrated it",
                status.applied, status.known
            ),
        ));
    }
    if !status.pending.is_empty() {
        return Err(Failure::new(
            Kind::Schema,
            format!(
                "schema {schema} is at migration {} of {}: run `eventcore migrate --schema {schema}` \
                 (`--dry-run` lists what it applies)",
                status.applied, status.known
            ),
        ));
    }
    Ok(status)
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

pub fn report_json(r: &ProjectionReport) -> serde_json::Value {
    json!({
        "name": r.checkpoint.name,
        "state": r.checkpoint.state.as_str(),
        "position": r.checkpoint.position.to_string(),
        "events_processed": r.checkpoint.events_processed,
        "lag": r.lag,
        "held_back": r.held_back,
        "counts_capped": r.counts_capped,
        "last_error": r.checkpoint.last_error,
        "last_event_id": r.checkpoint.last_event_id,
        "last_processed_at": r.checkpoint.last_processed_at,
        "updated_at": r.checkpoint.updated_at,
    })
}

pub fn report_table(reports: &[ProjectionReport]) -> Table {
    let mut table = Table::new(&[
        "PROJECTION",
        "STATE",
        "POSITION",
        "PROCESSED",
        "LAG",
        "UPDATED",
        "LAST ERROR",
    ]);
    for r in reports {
        let capped = if r.counts_capped { "+" } else { "" };
        table.row(vec![
            r.checkpoint.name.clone(),
            r.checkpoint.state.to_string(),
            r.checkpoint.position.to_string(),
            r.checkpoint.events_processed.to_string(),
            format!("{}{capped}", r.lag),
            r.checkpoint
                .updated_at
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
            output::shorten(r.checkpoint.last_error.as_deref().unwrap_or("-"), 80),
        ]);
    }
    table
}

pub async fn status(context: &Context) -> Result<(), Failure> {
    let store = &context.store;
    let schema = store.schema_status().await?;
    let totals = store.totals().await?;
    let watermark = store.watermark().await?;
    let head = store.head().await?;
    let reports = store.checkpoints().report().await?;
    let holder = watermark.holder.as_ref().map(|h| {
        json!({
            "pid": h.pid,
            "age_seconds": h.age.as_secs_f64(),
            "state": h.state,
            "application_name": h.application_name,
            "database": h.database,
        })
    });
    if context.json {
        output::json(&json!({
            "schema": schema.schema,
            "version": schema.applied,
            "events": { "count": totals.events.value, "exact": totals.events.exact },
            "streams": { "count": totals.streams.value, "exact": totals.streams.exact },
            "head": head.map(|p| p.to_string()),
            "watermark": {
                "oldest_running_transaction": watermark.oldest_running_transaction,
                "held_back": watermark.held_back.value,
                "held_back_exact": watermark.held_back.exact,
                "holder": holder,
            },
            "projections": reports.iter().map(report_json).collect::<Vec<_>>(),
        }))
        .map_err(Failure::other)?;
        return Ok(());
    }
    let about = |exact: bool| if exact { "" } else { " (estimated)" };
    println!(
        "schema      {} (migration {})",
        schema.schema, schema.applied
    );
    println!(
        "events      {}{}",
        totals.events.value,
        about(totals.events.exact)
    );
    println!(
        "streams     {}{}",
        totals.streams.value,
        about(totals.streams.exact)
    );
    println!(
        "head        {}",
        head.map_or_else(|| "- (no events)".to_owned(), |p| p.to_string())
    );
    match &watermark.holder {
        Some(h) if watermark.held_back.value > 0 => println!(
            "delivery    {} events held back by transaction of pid {} ({}, open {}, database {}{})",
            watermark.held_back.value,
            h.pid,
            h.state,
            seconds(h.age),
            h.database,
            if h.application_name.is_empty() {
                String::new()
            } else {
                format!(", application {}", h.application_name)
            }
        ),
        _ => println!("delivery    up to date (nothing held back)"),
    }
    println!();
    if reports.is_empty() {
        println!("no projections");
        return Ok(());
    }
    report_table(&reports).print().map_err(Failure::other)
}
