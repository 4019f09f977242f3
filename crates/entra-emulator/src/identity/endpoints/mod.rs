//! The fake endpoints: which path is which, the fault script, and the normal answers.

mod app_service;
mod arc;
mod cloud_shell;
mod entra;
mod imds;
mod managed;
pub(crate) mod token;

use std::time::Instant;

use super::fault::Fault;
use super::http::{Request, Response};
use super::log::Endpoint;
use super::reply::Reply;
use super::state::Shared;

/// IMDS token path.
pub(crate) const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
/// App Service (and legacy MSI) token path.
pub(crate) const APP_SERVICE_PATH: &str = "/msi/token";
/// Arc token path.
pub(crate) const ARC_PATH: &str = "/arc/metadata/identity/oauth2/token";
/// Cloud Shell token path.
pub(crate) const CLOUD_SHELL_PATH: &str = "/cloudshell/token";

/// The normal answer to a token request, and whether it carries a real token.
pub(crate) struct Handled {
    pub(crate) response: Response,
    pub(crate) issued: bool,
}

impl Handled {
    pub(crate) fn refused(response: Response) -> Handled {
        Handled {
            response,
            issued: false,
        }
    }

    pub(crate) fn token(response: Response) -> Handled {
        Handled {
            response,
            issued: true,
        }
    }
}

/// Which endpoint `request` is for. Paths match case-insensitively and with or without a trailing slash,
/// as `IDENTITY_ENDPOINT`/`MSI_ENDPOINT` values vary in both.
pub(crate) fn classify(request: &Request) -> Endpoint {
    let path = request.path.trim_end_matches('/').to_ascii_lowercase();
    match path.as_str() {
        IMDS_PATH => Endpoint::Imds,
        APP_SERVICE_PATH if request.query("api-version") == Some(app_service::LEGACY_API_VERSION) => {
            Endpoint::AppServiceLegacy
        }
        APP_SERVICE_PATH => Endpoint::AppService,
        ARC_PATH => Endpoint::Arc,
        CLOUD_SHELL_PATH => Endpoint::CloudShell,
        _ if entra::tenant_of(&path).is_some() => Endpoint::EntraToken,
        _ => Endpoint::Other,
    }
}

/// Decides the answer to `request` (applying the next fault to token requests) and logs the request with
/// that answer's status before anything is written.
pub(crate) fn respond(shared: &Shared, request: &Request, at: Instant) -> Reply {
    let endpoint = classify(request);
    if !endpoint.is_token_endpoint() {
        shared.record(endpoint, request, at, 404, false);
        return Reply::Send(Response::with_body(404, "text/plain; charset=utf-8", "Not Found"));
    }
    let (reply, status, issued) = match shared.next_fault() {
        None => {
            let handled = handle(shared, endpoint, request);
            let status = handled.response.status;
            (Reply::Send(handled.response), status, handled.issued)
        }
        Some(fault) => faulty(shared, endpoint, request, fault),
    };
    shared.record(endpoint, request, at, status, issued);
    reply
}

/// The normal answer of `endpoint`.
fn handle(shared: &Shared, endpoint: Endpoint, request: &Request) -> Handled {
    match endpoint {
        Endpoint::Imds => imds::handle(shared, request),
        Endpoint::AppService => app_service::handle(shared, request),
        Endpoint::AppServiceLegacy => app_service::handle_legacy(shared, request),
        Endpoint::Arc => arc::handle(shared, request),
        Endpoint::CloudShell => cloud_shell::handle(shared, request),
        Endpoint::EntraToken => entra::handle(shared, request),
        Endpoint::Other => Handled::refused(Response::with_body(404, "text/plain", "Not Found")),
    }
}

/// The reply under `fault`, the status to log (0: no answer) and whether a token was issued.
fn faulty(shared: &Shared, endpoint: Endpoint, request: &Request, fault: Fault) -> (Reply, u16, bool) {
    let json = "application/json; charset=utf-8";
    match fault {
        Fault::Status {
            status,
            body,
            retry_after,
        } => {
            let content_type = if serde_json::from_str::<serde_json::Value>(&body).is_ok() {
                json
            } else {
                "text/plain; charset=utf-8"
            };
            let mut response = Response::with_body(status, content_type, body);
            if let Some(retry_after) = retry_after {
                response = response.header("Retry-After", retry_after);
            }
            (Reply::Send(response), status, false)
        }
        Fault::Delay(delay) => {
            let handled = handle(shared, endpoint, request);
            let status = handled.response.status;
            (Reply::After(delay, handled.response), status, handled.issued)
        }
        Fault::NoResponse => (Reply::Hold, 0, false),
        Fault::Close => (Reply::Close, 0, false),
        Fault::Malformed => (
            Reply::Send(Response::with_body(200, json, "this is not JSON")),
            200,
            false,
        ),
        Fault::Html => (
            Reply::Send(Response::with_body(
                500,
                "text/html; charset=utf-8",
                "<!DOCTYPE html><html><head><title>500 Internal Server Error</title></head>\
                 <body><h1>Internal Server Error</h1><p>The server encountered an internal error.</p></body></html>",
            )),
            500,
            false,
        ),
        Fault::Oversized(len) => (Reply::Oversized(len), 200, false),
        Fault::Truncated => (Reply::Truncated, 200, false),
        Fault::SlowBody(duration) => {
            let handled = handle(shared, endpoint, request);
            let status = handled.response.status;
            (Reply::Trickle(duration, handled.response), status, handled.issued)
        }
        Fault::Redirect(location) => (
            Reply::Send(Response::with_body(307, "text/plain; charset=utf-8", Vec::new()).header("Location", location)),
            307,
            false,
        ),
        Fault::Json(value) => (Reply::Send(Response::json(200, &value)), 200, false),
    }
}
