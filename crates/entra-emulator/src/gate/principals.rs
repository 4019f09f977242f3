//! The principals the gate knows: the emulator's `pgaadauth_create_principal_with_oid`.

use std::collections::HashMap;

use parking_lot::Mutex;

/// What kind of Entra object a principal is (`objectType` of `pgaadauth_create_principal_with_oid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// A user (role name is the UPN).
    User,
    /// A group (members sign in with the group's name).
    Group,
    /// A service principal or managed identity (role name is the display name).
    Service,
}

/// A role mapped to an Entra object id.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Principal {
    /// The role name (case-sensitive), as clients put it in `user`.
    pub name: String,
    /// The object id tokens must carry in `oid`.
    pub oid: String,
    /// The object's kind.
    pub kind: PrincipalKind,
    /// Revoked principals cannot sign in.
    pub revoked: bool,
}

/// The registry, keyed by role name.
#[derive(Debug, Default)]
pub(crate) struct Principals {
    by_name: Mutex<HashMap<String, Principal>>,
}

impl Principals {
    /// Register (or re-register, un-revoking) `name` for `oid`.
    pub(crate) fn insert(&self, name: &str, oid: &str, kind: PrincipalKind) {
        self.by_name.lock().insert(
            name.to_string(),
            Principal {
                name: name.to_string(),
                oid: oid.to_string(),
                kind,
                revoked: false,
            },
        );
    }

    /// Mark `name` revoked; `false` if it was never registered.
    pub(crate) fn revoke(&self, name: &str) -> bool {
        match self.by_name.lock().get_mut(name) {
            Some(p) => {
                p.revoked = true;
                true
            }
            None => false,
        }
    }

    /// The principal registered as `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Principal> {
        self.by_name.lock().get(name).cloned()
    }

    /// Every registered principal.
    pub(crate) fn all(&self) -> Vec<Principal> {
        self.by_name.lock().values().cloned().collect()
    }
}
