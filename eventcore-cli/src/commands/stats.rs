//! `stats`: events per day and per type.

use clap::Args;
use serde_json::json;

use super::Context;
use crate::{
    failure::Failure,
    output::{self, Table},
};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Days to count, today included.
    #[arg(long, default_value_t = 14)]
    days: u32,
    /// How many of the latest events to count by type (bounds the cost).
    #[arg(long, default_value_t = eventcore_postgres::DEFAULT_RECENT_EVENTS)]
    recent: u64,
}

pub async fn stats(context: &Context, args: &StatsArgs) -> Result<(), Failure> {
    let days = context.store.events_per_day(args.days).await?;
    let types = context.store.events_per_type(args.recent).await?;
    if context.json {
        return output::json(&json!({
            "per_day": days.iter().map(|d| json!({ "day": d.day, "events": d.events })).collect::<Vec<_>>(),
            "recent": args.recent,
            "per_type": types.iter().map(|t| json!({ "event_type": t.event_type, "events": t.events })).collect::<Vec<_>>(),
        }))
        .map_err(Failure::other);
    }
    println!("events per day (last {} days, UTC)", args.days);
    let mut table = Table::new(&["DAY", "EVENTS"]);
    for d in &days {
        table.row(vec![d.day.to_string(), d.events.to_string()]);
    }
    table.print().map_err(Failure::other)?;
    println!();
    println!("events per type (latest {} events)", args.recent);
    let mut table = Table::new(&["TYPE", "EVENTS"]);
    for t in &types {
        table.row(vec![t.event_type.to_string(), t.events.to_string()]);
    }
    table.print().map_err(Failure::other)
}
