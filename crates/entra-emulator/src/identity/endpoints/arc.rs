//! Azure Arc: `GET /arc/metadata/identity/oauth2/token` with the key-file challenge. The first request gets
//! 401 and `WWW-Authenticate: Basic realm=<key file>`; the client proves it can read that file (which only
//! local administrators can on a real machine) by sending its contents back.

use std::path::PathBuf;

use super::managed::{self, IdKind};
use super::token::Shape;
use super::Handled;
use crate::identity::http::{Request, Response};
use crate::identity::principal::random_hex;
use crate::identity::state::Shared;

/// The oldest api-version the Arc agent serves.
const MIN_API_VERSION: &str = "2020-06-01";
const ID_PARAMS: &[(&str, IdKind)] = &[
    ("client_id", IdKind::Client),
    ("object_id", IdKind::Object),
    ("msi_res_id", IdKind::Resource),
];

pub(super) fn handle(shared: &Shared, request: &Request) -> Handled {
    if request.method != "GET" {
        return managed::method_not_allowed("GET");
    }
    if let Err(refused) = managed::require_metadata(request) {
        return refused;
    }
    let version = request.query("api-version").unwrap_or("");
    if !managed::api_version_at_least(version, MIN_API_VERSION) {
        return Handled::refused(managed::error(
            400,
            "invalid_request",
            &format!("Invalid api-version '{version}'; use {MIN_API_VERSION} or later"),
        ));
    }
    let presented = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Basic "))
        .map(str::trim);
    let accepted = {
        let secrets = shared.secrets.lock();
        matches!((presented, &secrets.arc_key), (Some(p), Some(key)) if p == key)
    };
    if !accepted {
        return challenge(shared);
    }
    let Some(resource) = request.query("resource").filter(|r| !r.is_empty()) else {
        return managed::missing_resource();
    };
    let selector = match managed::selector(request, ID_PARAMS) {
        Ok(selector) => selector,
        Err(_) => {
            return Handled::refused(managed::error(
                400,
                "invalid_request",
                "Only one of client_id, object_id or msi_res_id may be specified",
            ))
        }
    };
    match managed::find_identity(shared, selector) {
        Some(identity) => managed::issue(shared, &identity, resource, Shape::Imds),
        None => managed::identity_not_found(),
    }
}

/// Writes a fresh key to a new file (replacing the previous one) and answers 401 naming it.
fn challenge(shared: &Shared) -> Handled {
    let key = random_hex(32);
    let path: PathBuf = shared.arc_key_dir.join(format!("{}.key", random_hex(8)));
    if let Err(error) = std::fs::write(&path, &key) {
        return Handled::refused(managed::error(
            500,
            "server_error",
            &format!("could not write the Arc key file {}: {error}", path.display()),
        ));
    }
    let previous = {
        let mut secrets = shared.secrets.lock();
        secrets.arc_key = Some(key);
        secrets.arc_key_file.replace(path.clone())
    };
    if let Some(previous) = previous {
        let _ = std::fs::remove_file(previous);
    }
    Handled::refused(
        Response::json(
            401,
            &serde_json::json!({
                "error": "unauthorized_client",
                "error_description": "Send the contents of the key file named in WWW-Authenticate as Basic authorization",
            }),
        )
        .header("WWW-Authenticate", format!("Basic realm={}", path.display())),
    )
}
