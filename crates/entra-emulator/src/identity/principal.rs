//! The identities the fake knows: managed identities (system- and user-assigned) and app registrations.

use ring::digest::{digest, SHA256};

/// The subscription and resource group every fake resource lives in.
const SUBSCRIPTION_PREFIX: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg/providers/";

/// A managed identity: the VM's system identity or a user-assigned one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagedIdentity {
    /// Display name; the last segment of `resource_id`.
    pub name: String,
    /// Client (application) id: the `client_id` a request selects it by and the token's `appid`.
    pub client_id: String,
    /// Object (principal) id: the token's `oid`, which PostgreSQL maps roles by.
    pub object_id: String,
    /// Azure resource id: selects it by `msi_res_id` (IMDS) or `mi_res_id` (App Service); the token's `xms_mirid`.
    pub resource_id: String,
}

impl ManagedIdentity {
    /// An identity whose ids are derived from `name`, so the same name always gives the same ids.
    pub fn new(name: &str) -> Self {
        ManagedIdentity {
            name: name.to_string(),
            client_id: derived_uuid("mi-client", name),
            object_id: derived_uuid("mi-object", name),
            resource_id: format!(
                "{SUBSCRIPTION_PREFIX}Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
            ),
        }
    }
}

impl ManagedIdentity {
    /// A resource's system-assigned identity, named `name` in the tenant (Azure names it after the
    /// resource: a VM's name, an app's name, `app/slots/slot` for a deployment slot), whose tokens carry
    /// the resource's id `resource_id` as `xms_mirid`; client and object ids derived from the resource id.
    pub fn system_assigned(name: &str, resource_id: &str) -> Self {
        ManagedIdentity {
            name: name.to_string(),
            client_id: derived_uuid("mi-client", resource_id),
            object_id: derived_uuid("mi-object", resource_id),
            resource_id: resource_id.to_string(),
        }
    }

    /// The resource id of a resource `path` below the emulator's subscription and resource group
    /// (`Microsoft.Web/sites/orders/slots/staging`).
    pub fn resource_id_of(path: &str) -> String {
        format!("{SUBSCRIPTION_PREFIX}{path}")
    }
}

/// An app registration that signs in with a client secret or a federated (workload identity) assertion.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServicePrincipal {
    /// Display name.
    pub name: String,
    /// Client (application) id: the `client_id` of the token request and the token's `appid`.
    pub client_id: String,
    /// Object id of the service principal: the token's `oid`.
    pub object_id: String,
    /// The client secret the app accepts, if any.
    pub secret: Option<String>,
    /// The subject (`sub`) a federated assertion must carry, if the app trusts one.
    pub federated_subject: Option<String>,
}

// Hand-written so a test that prints an app does not print its secret.
impl std::fmt::Debug for ServicePrincipal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServicePrincipal")
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("object_id", &self.object_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("federated_subject", &self.federated_subject)
            .finish()
    }
}

impl ServicePrincipal {
    /// An app that signs in with `secret`; ids derived from `name`.
    pub fn with_secret(name: &str, secret: &str) -> Self {
        ServicePrincipal {
            secret: Some(secret.to_string()),
            ..Self::bare(name)
        }
    }

    /// An app that trusts federated assertions whose `sub` is `subject` (e.g.
    /// `system:serviceaccount:default:workload`); ids derived from `name`.
    pub fn federated(name: &str, subject: &str) -> Self {
        ServicePrincipal {
            federated_subject: Some(subject.to_string()),
            ..Self::bare(name)
        }
    }

    fn bare(name: &str) -> Self {
        ServicePrincipal {
            name: name.to_string(),
            client_id: derived_uuid("app-client", name),
            object_id: derived_uuid("app-object", name),
            secret: None,
            federated_subject: None,
        }
    }
}

/// A uuid-shaped id from a hash of `kind` and `name`.
fn derived_uuid(kind: &str, name: &str) -> String {
    let hash = digest(&SHA256, format!("{kind}\0{name}").as_bytes());
    uuid_string(&hash.as_ref()[..16])
}

/// Formats 16 bytes as `8-4-4-4-12` lowercase hex.
pub(crate) fn uuid_string(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A random uuid-shaped id (trace and correlation ids).
pub(crate) fn random_uuid() -> String {
    uuid_string(&rand::random::<[u8; 16]>())
}

/// A random secret of `bytes` random bytes, hex-encoded.
pub(crate) fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_name_and_differ_between_names() {
        let a = ManagedIdentity::new("a");
        assert_eq!(a, ManagedIdentity::new("a"));
        let b = ManagedIdentity::new("b");
        assert_ne!(a.client_id, b.client_id);
        assert_ne!(a.client_id, a.object_id);
        assert_eq!(a.client_id.len(), 36);
        assert!(a.resource_id.ends_with("/userAssignedIdentities/a"));
    }

    #[test]
    fn app_debug_hides_the_secret() {
        let app = ServicePrincipal::with_secret("app", "hunter2-secret");
        assert!(!format!("{app:?}").contains("hunter2"));
    }
}
