//! What the managed-identity endpoints (IMDS, App Service, Arc, Cloud Shell) have in common: the
//! `Metadata` guard, api-version checks, choosing the identity, and the 200 answer.

use serde_json::json;

use super::token::{self, Principal, Shape};
use super::Handled;
use crate::identity::http::{Request, Response};
use crate::identity::principal::ManagedIdentity;
use crate::identity::state::Shared;

/// An IMDS-style error: `{"error": .., "error_description": ..}`.
pub(crate) fn error(status: u16, error: &str, description: &str) -> Response {
    Response::json(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

/// 405 for a method the endpoint does not serve.
pub(crate) fn method_not_allowed(allowed: &'static str) -> Handled {
    Handled::refused(
        error(
            405,
            "invalid_request",
            &format!("The endpoint only accepts {allowed} requests"),
        )
        .header("Allow", allowed),
    )
}

/// The SSRF guard of IMDS, Arc and Cloud Shell: `Metadata: true` or 400 `bad_request_102`.
pub(crate) fn require_metadata(request: &Request) -> Result<(), Handled> {
    if request.header("metadata") == Some("true") {
        Ok(())
    } else {
        Err(Handled::refused(error(
            400,
            "bad_request_102",
            "Required metadata header not specified",
        )))
    }
}

/// Whether the date-shaped api-version `version` is `min` or later (`YYYY-MM-DD`, optional suffix).
pub(crate) fn api_version_at_least(version: &str, min: &str) -> bool {
    let date = version.get(..10).unwrap_or("");
    let shaped = date.len() == 10
        && date.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    shaped && date >= min
}

/// How a request names a user-assigned identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdKind {
    Client,
    Object,
    Resource,
}

/// The identity a request names through `params` (query name → kind): `Ok(None)` for none (the system
/// identity), `Err(names)` when more than one is given.
pub(crate) fn selector<'r>(
    request: &'r Request,
    params: &[(&'static str, IdKind)],
) -> Result<Option<(IdKind, &'r str)>, Vec<&'static str>> {
    let given: Vec<(&'static str, IdKind, &'r str)> = params
        .iter()
        .filter_map(|(name, kind)| {
            request
                .query(name)
                .filter(|v| !v.is_empty())
                .map(|v| (*name, *kind, v))
        })
        .collect();
    match given.as_slice() {
        [] => Ok(None),
        [(_, kind, value)] => Ok(Some((*kind, *value))),
        _ => Err(given.iter().map(|(name, _, _)| *name).collect()),
    }
}

/// The identity `selector` names: a registered user-assigned identity, or without a selector the system
/// identity when the machine has one. Ids compare case-insensitively, as Azure's do.
pub(crate) fn find_identity(shared: &Shared, selector: Option<(IdKind, &str)>) -> Option<ManagedIdentity> {
    let Some((kind, value)) = selector else {
        return shared.system_assigned.then(|| shared.system.clone());
    };
    let directory = shared.directory.lock();
    directory
        .identities
        .iter()
        .find(|identity| {
            let id = match kind {
                IdKind::Client => &identity.client_id,
                IdKind::Object => &identity.object_id,
                IdKind::Resource => &identity.resource_id,
            };
            id.eq_ignore_ascii_case(value)
        })
        .cloned()
}

/// IMDS's answer when the identity is not assigned to the machine.
pub(crate) fn identity_not_found() -> Handled {
    Handled::refused(error(400, "invalid_request", "Identity not found"))
}

/// IMDS's answer when `resource` is missing.
pub(crate) fn missing_resource() -> Handled {
    Handled::refused(error(
        400,
        "invalid_request",
        "Required audience parameter not specified",
    ))
}

/// 200 with a token for `identity` and `resource`, in the endpoint's `shape`.
pub(crate) fn issue(shared: &Shared, identity: &ManagedIdentity, resource: &str, shape: Shape) -> Handled {
    let minted = token::mint(
        shared,
        &Principal {
            object_id: &identity.object_id,
            client_id: &identity.client_id,
            resource_id: Some(&identity.resource_id),
        },
        resource,
    );
    let format = shared.settings().number_format;
    let body = token::body(shape, format, &minted, resource, &identity.client_id);
    Handled::token(Response::json(200, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_compare_as_dates() {
        assert!(api_version_at_least("2018-02-01", "2018-02-01"));
        assert!(api_version_at_least("2019-08-01", "2018-02-01"));
        assert!(api_version_at_least("2021-02-01-preview", "2020-06-01"));
        assert!(!api_version_at_least("2017-12-01", "2018-02-01"));
        assert!(!api_version_at_least("latest", "2018-02-01"));
        assert!(!api_version_at_least("9999", "2018-02-01"));
    }
}
