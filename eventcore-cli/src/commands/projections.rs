//! `projections` and `projection pause|resume|rebuild NAME`.

use std::time::Duration;

use clap::{Args, ValueEnum};
use eventcore::{CheckpointStore, ProjectionRequest, ProjectionState};
use serde_json::json;

use super::{Context, not_found, schema};
use crate::{
    failure::{Failure, Kind},
    output,
    progress::Progress,
};

pub async fn list(context: &Context) -> Result<(), Failure> {
    let reports = context.store.checkpoints().report().await?;
    if context.json {
        let rows: Vec<_> = reports.iter().map(schema::report_json).collect();
        return output::json(&json!({ "projections": rows })).map_err(Failure::other);
    }
    if reports.is_empty() {
        println!("no projections in schema {}", context.store.schema());
        return Ok(());
    }
    schema::report_table(&reports)
        .print()
        .map_err(Failure::other)
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Action {
    /// Stop applying; the checkpoint stays.
    Pause,
    /// Go on from the checkpoint.
    Resume,
    /// Reset the read model and apply everything again.
    Rebuild,
}

#[derive(Debug, Args)]
pub struct SteerArgs {
    /// What to ask.
    action: Action,
    /// The projection's name.
    name: String,
    /// Return once the request is sent, without waiting for the leader.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for the leader to carry the request out (and, for
    /// a rebuild, to catch up).
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

pub async fn steer(context: &Context, args: &SteerArgs) -> Result<(), Failure> {
    let checkpoints = context.store.checkpoints();
    let Some(before) = checkpoints.load(&args.name).await? else {
        let known: Vec<String> = checkpoints
            .list()
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect();
        return Err(not_found(format!(
            "no projection {:?} in schema {} (known: {})",
            args.name,
            context.store.schema(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    let request = match args.action {
        Action::Pause => ProjectionRequest::Pause,
        Action::Resume => ProjectionRequest::Resume,
        Action::Rebuild => ProjectionRequest::Rebuild,
    };
    checkpoints.request(&args.name, request).await?;
    if args.no_wait {
        return done(context, &args.name, request, before.state, None);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let mut progress =
        matches!(request, ProjectionRequest::Rebuild).then(|| Progress::new("rebuilt", None));
    loop {
        let pending = checkpoints.pending_request(&args.name).await?;
        let current = checkpoints.load(&args.name).await?;
        let state = current.as_ref().map_or(before.state, |c| c.state);
        let processed = current.as_ref().map_or(0, |c| c.events_processed);
        if let Some(progress) = progress.as_mut() {
            progress.update(processed);
        }
        let carried_out = pending.is_none_or(|p| p.request != request);
        let settled = match request {
            ProjectionRequest::Pause => state == ProjectionState::Paused,
            ProjectionRequest::Resume => state != ProjectionState::Paused,
            ProjectionRequest::Rebuild => state != ProjectionState::Rebuilding,
        };
        if carried_out && settled {
            if let Some(progress) = progress.take() {
                progress.finish(processed);
            }
            return done(
                context,
                &args.name,
                request,
                state,
                current.map(|c| c.position.to_string()),
            );
        }
        if tokio::time::Instant::now() >= deadline {
            let why = if carried_out {
                format!("the leader took the request, the projection is still {state}")
            } else {
                "no leader took the request: is a runner of this projection running? \
                 (the request stays stored and is carried out when one starts)"
                    .to_owned()
            };
            return Err(Failure::new(
                Kind::Failed,
                format!(
                    "{request} of projection {:?} not done within {} s: {why}",
                    args.name, args.timeout
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn done(
    context: &Context,
    name: &str,
    request: ProjectionRequest,
    state: ProjectionState,
    position: Option<String>,
) -> Result<(), Failure> {
    if context.json {
        return output::json(&json!({
            "projection": name,
            "request": request.as_str(),
            "state": state.as_str(),
            "position": position,
        }))
        .map_err(Failure::other);
    }
    println!("projection {name}: {request} requested; state {state}");
    Ok(())
}
