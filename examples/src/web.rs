//! The bank as an HTTP JSON API (axum): commands through the executor,
//! balances from the read model, idempotency keys from the
//! `Idempotency-Key` header.
//!
//! | method and path | command or read | success |
//! |---|---|---|
//! | `POST /accounts` `{"account", "owner"}` | [`OpenAccount`] | 201 |
//! | `POST /accounts/{id}/deposits` `{"cents", "reference"?}` | [`Deposit`] | 201 |
//! | `POST /accounts/{id}/withdrawals` `{"cents"}` | [`Withdraw`] | 201 |
//! | `POST /transfers` `{"from", "to", "cents"}` | [`Transfer`] | 201 |
//! | `GET /accounts/{id}/balance?after=POSITION` | the balances read model | 200 |
//!
//! A command's answer is `{"events", "position", "replayed"}`: `position`
//! is where its last event is in the global order; pass it as `after` to
//! the balance to read your own write (the read model is caught up to it
//! first, for at most 2 s; `"caught_up": false` says it was not).
//!
//! # Errors as HTTP statuses
//!
//! | error | status | what the client should do |
//! |---|---|---|
//! | malformed JSON, an invalid account id, amount or key | 400 | fix the request |
//! | [`ExecutionError::Rejected`](eventcore::ExecutionError::Rejected) (a business refusal: not open, insufficient funds, frozen, ...) | 422 | nothing to retry: the request is refused as it is |
//! | [`ExecutionError::RetriesExhausted`](eventcore::ExecutionError::RetriesExhausted) (conflicts on every attempt) | 409 | retry later |
//! | [`ExecutionError::RetriesExhausted`](eventcore::ExecutionError::RetriesExhausted) with the store unreachable on the last attempt | 503 with `Retry-After` | retry later |
//! | [`ExecutionError::Timeout`](eventcore::ExecutionError::Timeout) | 504 | retry (with the same key) |
//! | the store unavailable ([`StoreError::Unavailable`](eventcore::StoreError::Unavailable)) | 503 with `Retry-After` | retry later |
//! | an `Idempotency-Key` already used for another request ([`StoreError::KeyReused`](eventcore::StoreError::KeyReused)) | 422 | use a new key for a new request |
//! | **the outcome is unknown** ([`ExecutionError::is_unknown_outcome`](eventcore::ExecutionError::is_unknown_outcome): a commit whose answer was lost), with an `Idempotency-Key` | 503 with `Retry-After` | retry with the same key: it is applied at most once |
//! | the outcome is unknown, without a key | 500 | do not retry blindly: the command may have been applied; read the balance first |
//! | anything else | 500 | report it |
//!
//! Every error body is `{"error": message with its causes, "kind": the
//! error's kind, "outcome_unknown": bool}`.
// rustdoc calls these explicit targets redundant, yet renders the same
// links without them unresolved in the table above (see .ci/run).
#![allow(rustdoc::redundant_explicit_links)]

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use eventcore::{
    CommandExecutor, CommandLogic, EventStore, ExecutionError, ExecutionOptions, GlobalPosition,
    IdempotencyKey, ProjectionHandle, StoreError, StreamId, error_chain,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    balances::MemoryBalances,
    banking::{Amount, Deposit, OpenAccount, Transfer, Withdraw},
};

/// How long a balance read waits for the read model to reach `after`.
const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(2);

/// What the handlers share.
pub struct Bank<S: EventStore + Clone + 'static> {
    executor: CommandExecutor<S>,
    balances: MemoryBalances,
    projection: ProjectionHandle<MemoryBalances>,
}

impl<S: EventStore + Clone + 'static> Bank<S> {
    /// A bank on `executor`'s store, with its balances read model kept by
    /// `projection` (a runner started on the same store with `balances`).
    pub fn new(
        executor: CommandExecutor<S>,
        balances: MemoryBalances,
        projection: ProjectionHandle<MemoryBalances>,
    ) -> Self {
        Self {
            executor,
            balances,
            projection,
        }
    }

    /// Stops the read model's runner.
    ///
    /// # Errors
    /// What the runner ended with.
    pub async fn stop(self) -> Result<(), eventcore::ProjectionError> {
        self.projection.stop().await.map(drop)
    }
}

/// The API's routes on `bank`.
pub fn router<S: EventStore + Clone + 'static>(bank: Arc<Bank<S>>) -> Router {
    Router::new()
        .route("/accounts", post(open::<S>))
        .route("/accounts/{id}/deposits", post(deposit::<S>))
        .route("/accounts/{id}/withdrawals", post(withdraw::<S>))
        .route("/transfers", post(transfer::<S>))
        .route("/accounts/{id}/balance", get(balance::<S>))
        .with_state(bank)
}

/// An error answer: status, body, and the `Retry-After` it may carry.
struct ApiError {
    status: StatusCode,
    body: Value,
    retry_after: bool,
}

impl ApiError {
    fn bad_request(message: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: json!({ "error": message.to_string(), "kind": "bad_request", "outcome_unknown": false }),
            retry_after: false,
        }
    }

    fn not_found(message: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            body: json!({ "error": message.to_string(), "kind": "not_found", "outcome_unknown": false }),
            retry_after: false,
        }
    }

    /// The status for an execution error (see the module docs).
    fn execution<E>(error: &ExecutionError<E>, keyed: bool) -> Self
    where
        E: std::error::Error + 'static,
    {
        let unknown = error.is_unknown_outcome();
        let (status, retry_after) = match error {
            _ if unknown && keyed => (StatusCode::SERVICE_UNAVAILABLE, true),
            _ if unknown => (StatusCode::INTERNAL_SERVER_ERROR, false),
            ExecutionError::Rejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, false),
            ExecutionError::RetriesExhausted {
                last_error: StoreError::Unavailable { .. },
                ..
            } => (StatusCode::SERVICE_UNAVAILABLE, true),
            ExecutionError::RetriesExhausted { .. } => (StatusCode::CONFLICT, false),
            ExecutionError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, false),
            ExecutionError::Store {
                source: StoreError::Unavailable { .. },
                ..
            } => (StatusCode::SERVICE_UNAVAILABLE, true),
            ExecutionError::Store {
                source: StoreError::KeyReused { .. },
                ..
            } => (StatusCode::UNPROCESSABLE_ENTITY, false),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, false),
        };
        Self {
            status,
            body: json!({
                "error": error_chain(error),
                "kind": error.kind(),
                "outcome_unknown": unknown,
            }),
            retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

fn account(id: &str) -> Result<StreamId, ApiError> {
    StreamId::try_new(id)
        .map_err(|e| ApiError::bad_request(format!("{id:?} is not an account id: {e}")))
}

fn amount(cents: u64) -> Result<Amount, ApiError> {
    Amount::try_new(cents)
        .map_err(|e| ApiError::bad_request(format!("{cents} is not an amount: {e}")))
}

fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(t)| t)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// The options of one request: its idempotency key, if it sent one.
fn options(headers: &HeaderMap) -> Result<(ExecutionOptions, bool), ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok((ExecutionOptions::default(), false));
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("the Idempotency-Key header is not text"))?;
    let key = IdempotencyKey::try_new(text)
        .map_err(|e| ApiError::bad_request(format!("invalid Idempotency-Key: {e}")))?;
    Ok((ExecutionOptions::default().with_idempotency_key(key), true))
}

/// Runs `command` and answers 201 with what it wrote.
async fn execute<S, C>(bank: &Bank<S>, command: &C, headers: &HeaderMap) -> ApiResult
where
    S: EventStore + Clone + 'static,
    C: CommandLogic,
    C::Error: std::error::Error + 'static,
{
    let (options, keyed) = options(headers)?;
    match bank.executor.execute(command, options).await {
        Ok(result) => Ok((
            StatusCode::CREATED,
            Json(json!({
                "events": result.events.len(),
                "position": result.events.last().map(|e| e.position.to_string()),
                "replayed": result.replayed,
            })),
        )
            .into_response()),
        Err(error) => Err(ApiError::execution(&error, keyed)),
    }
}

#[derive(Deserialize)]
struct OpenBody {
    account: String,
    owner: String,
}

async fn open<S: EventStore + Clone + 'static>(
    State(bank): State<Arc<Bank<S>>>,
    headers: HeaderMap,
    json: Result<Json<OpenBody>, JsonRejection>,
) -> ApiResult {
    let request = body(json)?;
    let command = OpenAccount {
        account: account(&request.account)?,
        owner: request.owner,
    };
    execute(&bank, &command, &headers).await
}

#[derive(Deserialize)]
struct DepositBody {
    cents: u64,
    #[serde(default)]
    reference: Option<String>,
}

async fn deposit<S: EventStore + Clone + 'static>(
    State(bank): State<Arc<Bank<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    json: Result<Json<DepositBody>, JsonRejection>,
) -> ApiResult {
    let request = body(json)?;
    let command = Deposit {
        account: account(&id)?,
        amount: amount(request.cents)?,
        reference: request.reference,
    };
    execute(&bank, &command, &headers).await
}

#[derive(Deserialize)]
struct WithdrawBody {
    cents: u64,
}

async fn withdraw<S: EventStore + Clone + 'static>(
    State(bank): State<Arc<Bank<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    json: Result<Json<WithdrawBody>, JsonRejection>,
) -> ApiResult {
    let request = body(json)?;
    let command = Withdraw {
        account: account(&id)?,
        amount: amount(request.cents)?,
    };
    execute(&bank, &command, &headers).await
}

#[derive(Deserialize)]
struct TransferBody {
    from: String,
    to: String,
    cents: u64,
}

async fn transfer<S: EventStore + Clone + 'static>(
    State(bank): State<Arc<Bank<S>>>,
    headers: HeaderMap,
    json: Result<Json<TransferBody>, JsonRejection>,
) -> ApiResult {
    let request = body(json)?;
    let command = Transfer::new(
        account(&request.from)?,
        account(&request.to)?,
        amount(request.cents)?,
    )
    .map_err(ApiError::bad_request)?;
    execute(&bank, &command, &headers).await
}

#[derive(Deserialize)]
struct BalanceQuery {
    after: Option<String>,
}

async fn balance<S: EventStore + Clone + 'static>(
    State(bank): State<Arc<Bank<S>>>,
    Path(id): Path<String>,
    Query(query): Query<BalanceQuery>,
) -> ApiResult {
    let id = account(&id)?;
    let caught_up = match query.after.as_deref() {
        None => true,
        Some(text) => {
            let after: GlobalPosition = text.parse().map_err(ApiError::bad_request)?;
            tokio::time::timeout(
                READ_YOUR_WRITES_WAIT,
                bank.projection.wait_for(|s| s.position >= after),
            )
            .await
            .is_ok_and(|reached| reached.is_ok())
        }
    };
    let Some(cents) = bank.balances.balances().get(&id).copied() else {
        return Err(ApiError::not_found(format!(
            "no account {id} in the read model"
        )));
    };
    Ok(Json(json!({
        "account": id,
        "cents": cents,
        "position": bank.projection.status().position.to_string(),
        "caught_up": caught_up,
    }))
    .into_response())
}

/// Serves the API on `listener` over `store` until `shutdown` completes,
/// then finishes the requests in flight (graceful shutdown) and stops the
/// read model's runner.
///
/// The balances read model is kept in memory by a projection runner on
/// `store` (checkpoints in memory too: it rebuilds from the store at every
/// start).
///
/// # Errors
/// What serving fails with (the listener's I/O errors).
pub async fn serve<S, F>(
    store: S,
    listener: tokio::net::TcpListener,
    shutdown: F,
) -> std::io::Result<()>
where
    S: EventStore + Clone + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let balances = MemoryBalances::new();
    let projection = eventcore::ProjectionRunner::new(
        store.clone(),
        balances.clone(),
        eventcore_memory::InMemoryCheckpointStore::new(),
    )
    .start();
    let bank = Arc::new(Bank::new(CommandExecutor::new(store), balances, projection));
    let served = axum::serve(listener, router(bank.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    if let Ok(bank) = Arc::try_unwrap(bank)
        && let Err(error) = bank.stop().await
    {
        tracing::warn!(%error, "the balances read model ended with an error");
    }
    served
}
