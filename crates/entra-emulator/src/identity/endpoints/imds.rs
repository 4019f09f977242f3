//! IMDS: `GET /metadata/identity/oauth2/token` on a VM or VMSS.

use super::managed::{self, IdKind};
use super::token::Shape;
use super::Handled;
use crate::identity::http::Request;
use crate::identity::state::Shared;

/// The oldest api-version IMDS serves tokens for.
const MIN_API_VERSION: &str = "2018-02-01";
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
    match request.query("api-version") {
        None => {
            return Handled::refused(managed::error(
                400,
                "invalid_request",
                "Required query variable 'api-version' is missing",
            ))
        }
        Some(v) if !managed::api_version_at_least(v, MIN_API_VERSION) => {
            return Handled::refused(managed::error(
                400,
                "invalid_request",
                &format!("Invalid api-version '{v}'; use {MIN_API_VERSION} or later"),
            ))
        }
        Some(_) => {}
    }
    let Some(resource) = request.query("resource").filter(|r| !r.is_empty()) else {
        return managed::missing_resource();
    };
    let selector = match managed::selector(request, ID_PARAMS) {
        Ok(selector) => selector,
        Err(names) => {
            return Handled::refused(managed::error(
                400,
                "invalid_request",
                &format!(
                    "Only one of client_id, object_id or msi_res_id may be specified; got {}",
                    names.join(", ")
                ),
            ))
        }
    };
    match managed::find_identity(shared, selector) {
        Some(identity) => managed::issue(shared, &identity, resource, Shape::Imds),
        None => managed::identity_not_found(),
    }
}
