//! A web backend on an Entra-authenticated pool: a health endpoint for the orchestrator, a small notes
//! API, and a graceful shutdown on Ctrl-C or SIGTERM.
//!
//! ```sh
//! # on Azure (Service Connector's variables; a managed identity signs in)
//! cargo run --example axum_backend
//! # on a laptop, against the in-process emulator
//! EMULATOR=1 PORT=8080 cargo run --example axum_backend
//!
//! curl -s localhost:8080/healthz
//! curl -s -X POST localhost:8080/notes -H 'content-type: application/json' -d '{"text":"hello"}'
//! curl -s localhost:8080/notes/1
//! curl -s localhost:8080/notes
//! curl -s localhost:8080/metrics     # Prometheus: db.client.connection.*, entra.pool.*, entra.token.*
//! ```
//!
//! `/healthz` answers 200 only when the token is usable *and* a pooled `SELECT 1` passes, so a load
//! balancer stops routing to an instance whose identity endpoint has been failing long enough for its
//! token to lapse, rather than letting it fail every request.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use entra_emulator::Emulator;
use entra_pool::postgres::{diagnose, report, EntraConfig, EntraPool, GetError, PoolBuilder};
use entra_pool::token::Env;
use serde_json::{json, Value};

/// A note's text is kept short: this is a demo table, not a document store.
const MAX_NOTE_CHARS: usize = 10_000;
/// `GET /notes` returns at most this many, newest first.
const LIST_LIMIT: i64 = 100;

type Reply = (StatusCode, Json<Value>);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("axum_backend: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let port: u16 = match std::env::var("PORT") {
        Ok(text) => text
            .parse()
            .map_err(|_| format!("PORT={text:?} is not a port number (1–65535)"))?,
        Err(_) => 8080,
    };
    // The pool's and the refresher's metrics (entra-postgres feature `metrics`) go to this recorder and
    // are served at /metrics; install it before the pool exists, so nothing is missed.
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("installing the Prometheus recorder: {e}"))?;
    // Kept until the end: dropping the emulator stops its server.
    let emulator = match std::env::var_os("EMULATOR") {
        Some(_) => Some(Emulator::start().await.map_err(|e| report(&e))?),
        None => None,
    };
    let mut config = EntraConfig::from_env().name("notes");
    if let Some(emulator) = &emulator {
        config = config.env(Env::from_pairs(emulator.env_vars()));
    }
    let pool = PoolBuilder::new(config).build().await.map_err(|e| report(&e))?;

    let client = pool.get().await.map_err(|e| report(&e))?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS notes (
                 id bigserial PRIMARY KEY,
                 text text NOT NULL,
                 created_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(|e| format!("creating the notes table: {}", report(&e)))?;
    drop(client);

    let metrics = Router::new().route("/metrics", get(move || std::future::ready(prometheus.render())));
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/notes", get(list_notes).post(create_note))
        .route("/notes/{id}", get(get_note))
        .with_state(Arc::new(pool.clone()))
        .merge(metrics);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("binding 127.0.0.1:{port}: {e} (set PORT to a free port)"))?;
    tracing::info!(port, role = pool.role(), "listening on 127.0.0.1");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("serving HTTP: {e}"))?;

    // In-flight requests have finished: close the connections and stop the refresher before exiting.
    pool.close();
    if let Some(tokens) = pool.tokens() {
        tokens.shutdown();
    }
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Resolves on Ctrl-C, or on SIGTERM (what Kubernetes and App Service send before killing a container).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No handler could be installed: rely on SIGTERM alone instead of stopping at once.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

async fn healthz(State(pool): State<Arc<EntraPool>>) -> Reply {
    // The check first, so the counts below include the connection it used.
    let check = pool.check().await;
    let status = pool.status();
    // Static-password mode has no token, so nothing about one can make the instance unhealthy.
    let token_usable = status.token.as_ref().is_none_or(|t| t.is_usable());
    let token = status.token.as_ref().map(|t| {
        json!({
            "source": t.source,
            "state": format!("{:?}", t.state),
            "usable_for_secs": t.usable_for().map(|d| d.as_secs()),
            "consecutive_failures": t.consecutive_failures,
            "last_error": t.last_error.as_ref().map(|e| report(e)),
        })
    });
    let body = json!({
        "healthy": token_usable && check.is_ok(),
        "pool": {
            "max_size": status.pool.max_size,
            "size": status.pool.size,
            "available": status.pool.available,
            "waiting": status.pool.waiting,
        },
        "token": token,
        "check": match &check {
            Ok(()) => "ok".to_string(),
            Err(e) => report(e),
        },
    });
    let code = if token_usable && check.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn create_note(State(pool): State<Arc<EntraPool>>, Json(body): Json<Value>) -> Reply {
    let Some(text) = body.get("text").and_then(Value::as_str) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object with a string \"text\"",
        );
    };
    if text.chars().count() > MAX_NOTE_CHARS {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("a note holds at most {MAX_NOTE_CHARS} characters"),
        );
    }
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return unavailable(&e),
    };
    match client
        .query_one("INSERT INTO notes (text) VALUES ($1) RETURNING id", &[&text])
        .await
    {
        Ok(row) => {
            let id: i64 = row.get(0);
            (StatusCode::CREATED, Json(json!({ "id": id, "text": text })))
        }
        Err(e) => failed(&e),
    }
}

async fn get_note(State(pool): State<Arc<EntraPool>>, Path(id): Path<i64>) -> Reply {
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return unavailable(&e),
    };
    match client
        .query_opt(
            "SELECT id, text, created_at::text FROM notes WHERE id = $1",
            &[&id],
        )
        .await
    {
        Ok(Some(row)) => (StatusCode::OK, Json(note(&row))),
        Ok(None) => error(StatusCode::NOT_FOUND, &format!("no note {id}")),
        Err(e) => failed(&e),
    }
}

async fn list_notes(State(pool): State<Arc<EntraPool>>) -> Reply {
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return unavailable(&e),
    };
    match client
        .query(
            "SELECT id, text, created_at::text FROM notes ORDER BY id DESC LIMIT $1",
            &[&LIST_LIMIT],
        )
        .await
    {
        Ok(rows) => (
            StatusCode::OK,
            Json(Value::Array(rows.iter().map(note).collect())),
        ),
        Err(e) => failed(&e),
    }
}

fn note(row: &tokio_postgres::Row) -> Value {
    json!({
        "id": row.get::<_, i64>(0),
        "text": row.get::<_, String>(1),
        "created_at": row.get::<_, String>(2),
    })
}

fn error(code: StatusCode, message: &str) -> Reply {
    (code, Json(json!({ "error": message })))
}

/// No connection could be had (pool exhausted, token unavailable, server down): retrying later may work.
/// The log line and the answer carry the typed diagnosis: what went wrong and what to do.
fn unavailable(e: &GetError) -> Reply {
    let d = diagnose(e);
    tracing::warn!(error = %report(e), cause = ?d.cause, fix = %d.fix, "no database connection");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": report(e), "cause": d.summary, "fix": d.fix })),
    )
}

fn failed(e: &tokio_postgres::Error) -> Reply {
    tracing::warn!(error = %report(e), "query failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, &report(e))
}
