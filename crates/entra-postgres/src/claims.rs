//! Reading the role name a token stands for, when the configuration names none.
//!
//! Microsoft's own clients (the Python `azure-postgresql-auth`, the .NET `UseEntraAuthentication` and .NET
//! Aspire's helpers) read, in order: the name of a user-assigned identity from `xms_mirid`, else `upn`,
//! `preferred_username`, `unique_name`; when that gives nothing they ask for a second token, for Azure
//! Resource Manager's scope, and read it the same way. We read the same claims in the same order, and
//! differ where their rule cannot give the right name (see [`token_user`]).

/// The role name a token's principal signs in as, and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenUser {
    /// The role name (case-sensitive, as the server compares it).
    pub name: String,
    /// The claim it was read from (`xms_mirid`, `upn`, `preferred_username` or `unique_name`).
    pub claim: &'static str,
    /// What kind of principal the token is for.
    pub kind: TokenUserKind,
}

/// What kind of principal a token that names its role is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenUserKind {
    /// A user-assigned managed identity (`…/Microsoft.ManagedIdentity/userAssignedIdentities/{name}`),
    /// wherever it signs in from: a VM, App Service, Functions, Container Apps, AKS workload identity.
    UserAssignedIdentity,
    /// A system-assigned managed identity, named after its resource: a VM's or a scale set's name, an
    /// app's name, and for a deployment slot `{app}/slots/{slot}`.
    SystemAssignedIdentity,
    /// A user of the tenant: the user principal name.
    User,
}

/// Why a token names no role: each says what to set instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoTokenUser {
    /// Not a JWT whose payload is a JSON object.
    #[error("the token is not a JWT whose claims can be read: set the user to the Entra principal's name")]
    NotAJwt,
    /// A guest of the tenant (a B2B user of another tenant, or a Microsoft account): its tokens carry no
    /// `upn`, only the name it signs in with at home, and its role is whatever name the admin gave it.
    #[error(
        "the token is a guest's ({home}): a guest's role is the name its principal was created with \
         (pgaadauth_create_principal), which the token does not carry: set the user to that name"
    )]
    Guest {
        /// The name the guest signs in with at home (`unique_name`, `email` or `preferred_username`), or
        /// a placeholder when the token carries none.
        home: String,
    },
    /// An application: a service principal with a secret or a certificate, or an app registration
    /// federated with a workload (AKS workload identity without a managed identity). Its role is its
    /// display name, which its tokens do not carry.
    #[error(
        "the token is an application's (appid {app_id}): its role is the app's display name, which the \
         token does not carry: set the user to it"
    )]
    Application {
        /// The application (client) id, or a placeholder when the token carries none.
        app_id: String,
    },
    /// None of the claims a name is read from.
    #[error(
        "the token has none of the claims a role name is read from (xms_mirid, upn, preferred_username, \
         unique_name): set the user to the Entra principal's name"
    )]
    NoNameClaim,
}

/// The role a token's principal signs in as, read from its claims, or why it names none.
///
/// | token | claims (as Azure issues them) | role |
/// |---|---|---|
/// | user-assigned managed identity | `xms_mirid` = `…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/orders-api` | `orders-api` |
/// | system-assigned, VM / scale set | `xms_mirid` = `…/providers/Microsoft.Compute/virtualMachines/vm-1` (`virtualMachineScaleSets/ss-1`) | `vm-1` (`ss-1`) |
/// | system-assigned, App Service / Functions | `xms_mirid` = `…/providers/Microsoft.Web/sites/orders` | `orders` |
/// | system-assigned, App Service slot | `xms_mirid` = `…/providers/Microsoft.Web/sites/orders/slots/staging` | `orders/slots/staging` |
/// | user | `upn` (v1 tokens), else `preferred_username` (v2), else `unique_name` | that name |
/// | guest user | no `upn`; `idp` ≠ `iss` (or `acct` = 1) | none: [`NoTokenUser::Guest`] |
/// | service principal, app-registration workload identity | `idtyp` = `app`, `appid`, no `xms_mirid` | none: [`NoTokenUser::Application`] |
///
/// A system-assigned identity is named after its resource (the resource path below the resource
/// type: a slot's identity is `app/slots/slot`). Microsoft's clients read `xms_mirid` only for
/// user-assigned identities, and for the others ask for a second token (for Azure Resource Manager's
/// scope), which names no user either; we read the resource's name instead and ask for nothing more.
///
/// Nothing is verified: the server does that. This only saves configuring the name twice.
pub fn token_user(jwt: &str) -> Result<TokenUser, NoTokenUser> {
    let claims = entra_token::unverified_claims(jwt).ok_or(NoTokenUser::NotAJwt)?;
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    if let Some((name, kind)) = text("xms_mirid").and_then(identity_name) {
        return Ok(TokenUser {
            name,
            claim: "xms_mirid",
            kind,
        });
    }
    if let Some(upn) = text("upn") {
        return Ok(user(upn, "upn"));
    }
    // A guest's token carries no upn, only its home name, which is not the role it was created as.
    let foreign_idp = text("idp").is_some_and(|idp| Some(idp) != text("iss"));
    let guest_account = claims.get("acct").is_some_and(|a| a == 1 || a == "1");
    if foreign_idp || guest_account {
        let home = ["unique_name", "email", "preferred_username"]
            .into_iter()
            .find_map(&text)
            .unwrap_or("no home name in the token");
        return Err(NoTokenUser::Guest { home: home.into() });
    }
    for claim in ["preferred_username", "unique_name"] {
        if let Some(name) = text(claim) {
            return Ok(user(name, claim));
        }
    }
    if text("idtyp") == Some("app") || text("appid").is_some() || text("azp").is_some() {
        let app_id = text("appid")
            .or_else(|| text("azp"))
            .unwrap_or("not in the token");
        return Err(NoTokenUser::Application {
            app_id: app_id.into(),
        });
    }
    Err(NoTokenUser::NoNameClaim)
}

fn user(name: &str, claim: &'static str) -> TokenUser {
    TokenUser {
        name: name.to_string(),
        claim,
        kind: TokenUserKind::User,
    }
}

/// The name of the managed identity an Azure resource id (`xms_mirid`) names: the path below its
/// resource type, `/subscriptions/{s}/resourcegroups/{g}/providers/{namespace}/{type}/{name}[/{type}/{name}…]`.
/// `None` for any other shape.
fn identity_name(resource_id: &str) -> Option<(String, TokenUserKind)> {
    let lower = resource_id.to_ascii_lowercase();
    // The last `/providers/`: an extension resource's id holds two.
    let at = lower.rfind("/providers/")?;
    let segments: Vec<&str> = resource_id[at + "/providers/".len()..].split('/').collect();
    // The namespace and one or more (type, name) pairs, none empty.
    if segments.len() < 3 || segments.len().is_multiple_of(2) || segments.iter().any(|s| s.trim().is_empty())
    {
        return None;
    }
    let (namespace, kind) = (segments[0], segments[1]);
    let user_assigned = namespace.eq_ignore_ascii_case("Microsoft.ManagedIdentity")
        && kind.eq_ignore_ascii_case("userAssignedIdentities");
    if user_assigned {
        // As Microsoft's clients read it: the last segment, and only directly below the type.
        return (segments.len() == 3).then(|| (segments[2].to_string(), TokenUserKind::UserAssignedIdentity));
    }
    Some((segments[2..].join("/"), TokenUserKind::SystemAssignedIdentity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn jwt(claims: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.sig", e.encode(r#"{"alg":"RS256"}"#), e.encode(claims))
    }

    fn user_from_token(jwt: &str) -> Option<(String, &'static str)> {
        token_user(jwt).ok().map(|u| (u.name, u.claim))
    }

    fn mirid(path: &str) -> String {
        jwt(&format!(
            r#"{{"xms_mirid":"/subscriptions/s/resourcegroups/rg/providers/{path}","idtyp":"app","appid":"a"}}"#
        ))
    }

    #[test]
    fn a_user_assigned_identity_is_named_by_the_last_segment() {
        let token = mirid("Microsoft.ManagedIdentity/userAssignedIdentities/orders-api");
        let user = token_user(&token).unwrap();
        assert_eq!(user.name, "orders-api");
        assert_eq!(user.kind, TokenUserKind::UserAssignedIdentity);
        assert_eq!(user_from_token(&token), Some(("orders-api".into(), "xms_mirid")));
    }

    #[test]
    fn a_system_assigned_identity_is_named_after_its_resource_and_a_slot_after_app_and_slot() {
        for (path, name) in [
            ("Microsoft.Compute/virtualMachines/vm-1", "vm-1"),
            ("Microsoft.Compute/virtualMachineScaleSets/ss-1", "ss-1"),
            ("Microsoft.Web/sites/orders", "orders"),
            ("Microsoft.Web/sites/orders/slots/staging", "orders/slots/staging"),
            ("microsoft.web/SITES/Orders/slots/Staging", "Orders/slots/Staging"),
        ] {
            let user = token_user(&mirid(path)).unwrap();
            assert_eq!(
                (user.name.as_str(), user.kind),
                (name, TokenUserKind::SystemAssignedIdentity)
            );
        }
    }

    #[test]
    fn a_resource_id_of_another_shape_is_passed_over() {
        for odd in [
            "/subscriptions/s",
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Web/sites",
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Web/sites/",
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Web/sites//slots/x",
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a/b/c",
        ] {
            let token = jwt(&format!(r#"{{"xms_mirid":"{odd}","upn":"ana@contoso.com"}}"#));
            assert_eq!(user_from_token(&token), Some(("ana@contoso.com".into(), "upn")), "{odd}");
        }
    }

    #[test]
    fn users_are_named_by_upn_then_preferred_username_then_unique_name() {
        assert_eq!(
            user_from_token(&jwt(r#"{"upn":"ana@contoso.com","unique_name":"x"}"#)),
            Some(("ana@contoso.com".into(), "upn"))
        );
        assert_eq!(
            user_from_token(&jwt(
                r#"{"preferred_username":"bob@contoso.com","unique_name":"x"}"#
            )),
            Some(("bob@contoso.com".into(), "preferred_username"))
        );
        assert_eq!(
            user_from_token(&jwt(r#"{"unique_name":"eve@contoso.com"}"#)),
            Some(("eve@contoso.com".into(), "unique_name"))
        );
        // A member's idp, when present, is the issuer.
        assert_eq!(
            user_from_token(&jwt(r#"{"iss":"i","idp":"i","unique_name":"eve@contoso.com"}"#)),
            Some(("eve@contoso.com".into(), "unique_name"))
        );
    }

    #[test]
    fn guests_and_applications_name_no_role_and_say_why() {
        let guest = jwt(r#"{"iss":"i","idp":"live.com","unique_name":"live.com#ana@outlook.com"}"#);
        assert_eq!(
            token_user(&guest),
            Err(NoTokenUser::Guest {
                home: "live.com#ana@outlook.com".into()
            })
        );
        let flagged = jwt(r#"{"acct":1,"preferred_username":"ana@fabrikam.com"}"#);
        assert!(matches!(token_user(&flagged), Err(NoTokenUser::Guest { .. })));
        let app = jwt(r#"{"idtyp":"app","appid":"11","oid":"1"}"#);
        assert_eq!(
            token_user(&app),
            Err(NoTokenUser::Application { app_id: "11".into() })
        );
        assert_eq!(token_user(&jwt(r#"{"oid":"1"}"#)), Err(NoTokenUser::NoNameClaim));
        assert_eq!(token_user("not a jwt"), Err(NoTokenUser::NotAJwt));
    }
}
