//! Cloud Shell: `POST /cloudshell/token` with a form body `resource=…`.

use super::managed;
use super::token::Shape;
use super::Handled;
use crate::identity::http::Request;
use crate::identity::state::Shared;

pub(super) fn handle(shared: &Shared, request: &Request) -> Handled {
    if request.method != "POST" {
        return managed::method_not_allowed("POST");
    }
    if let Err(refused) = managed::require_metadata(request) {
        return refused;
    }
    let form = request.form();
    let Some(resource) = form
        .iter()
        .find(|(k, v)| k == "resource" && !v.is_empty())
        .map(|(_, v)| v.as_str())
    else {
        return managed::missing_resource();
    };
    // Cloud Shell signs in as its user; the fake stands the system identity in for that user.
    match managed::find_identity(shared, None) {
        Some(identity) => managed::issue(shared, &identity, resource, Shape::Imds),
        None => managed::identity_not_found(),
    }
}
