//! App Service / Functions / Container Apps: `GET /msi/token`, api-version 2019-08-01 with
//! `X-IDENTITY-HEADER`, and the legacy 2017-09-01 form with a `secret` header (`MSI_ENDPOINT`/`MSI_SECRET`).

use serde_json::json;

use super::managed::{self, IdKind};
use super::token::Shape;
use super::Handled;
use crate::identity::http::{Request, Response};
use crate::identity::principal::random_uuid;
use crate::identity::state::Shared;

/// The current api-version.
pub(super) const API_VERSION: &str = "2019-08-01";
/// The legacy api-version, answered with a date in `expires_on`.
pub(super) const LEGACY_API_VERSION: &str = "2017-09-01";

const ID_PARAMS: &[(&str, IdKind)] = &[
    ("client_id", IdKind::Client),
    ("principal_id", IdKind::Object),
    ("object_id", IdKind::Object),
    ("mi_res_id", IdKind::Resource),
];
const LEGACY_ID_PARAMS: &[(&str, IdKind)] = &[("clientid", IdKind::Client)];

/// App Service's error shape, which MSAL reads as `statusCode` and `message`.
fn error(status: u16, message: &str) -> Handled {
    Handled::refused(Response::json(
        status,
        &json!({ "statusCode": status, "message": message, "correlationId": random_uuid() }),
    ))
}

pub(super) fn handle(shared: &Shared, request: &Request) -> Handled {
    if request.method != "GET" {
        return managed::method_not_allowed("GET");
    }
    let expected = shared.secrets.lock().identity_header.clone();
    match request.header("x-identity-header") {
        None => return error(400, "The X-IDENTITY-HEADER header is required"),
        Some(given) if given != expected => return error(401, "The X-IDENTITY-HEADER value is not valid"),
        Some(_) => {}
    }
    match request.query("api-version") {
        Some(API_VERSION) => {}
        other => {
            return error(
                400,
                &format!(
                    "api-version {:?} is not supported; use {API_VERSION}",
                    other.unwrap_or("")
                ),
            )
        }
    }
    if request.query("msi_res_id").is_some() {
        // The Rust SDK's mistake (azure-sdk-for-rust#2407): App Service names the parameter mi_res_id.
        return error(400, "msi_res_id is not a valid parameter; use mi_res_id");
    }
    token_for(shared, request, ID_PARAMS, Shape::AppService)
}

pub(super) fn handle_legacy(shared: &Shared, request: &Request) -> Handled {
    if request.method != "GET" {
        return managed::method_not_allowed("GET");
    }
    match request.header("secret") {
        None => return error(400, "The secret header is required"),
        Some(given) if given != shared.legacy_secret => {
            return error(401, "The secret header value is not valid")
        }
        Some(_) => {}
    }
    token_for(shared, request, LEGACY_ID_PARAMS, Shape::AppServiceLegacy)
}

fn token_for(shared: &Shared, request: &Request, params: &[(&'static str, IdKind)], shape: Shape) -> Handled {
    let Some(resource) = request.query("resource").filter(|r| !r.is_empty()) else {
        return error(400, "The resource parameter is required");
    };
    let selector = match managed::selector(request, params) {
        Ok(selector) => selector,
        Err(names) => {
            return error(
                400,
                &format!("Specify at most one identity parameter; got {}", names.join(", ")),
            )
        }
    };
    match managed::find_identity(shared, selector) {
        Some(identity) => managed::issue(shared, &identity, resource, shape),
        None => error(400, "Unable to load the proper Managed Identity."),
    }
}
