//! Reading the role name a token stands for, when the configuration names none.

/// The user name a token's principal signs in as, and the claim it came from: a managed identity's name
/// (the last segment of `xms_mirid`), else the user's `upn`, else `preferred_username`.
///
/// Nothing is verified: the server does that. This only saves configuring the name twice.
pub fn user_from_token(jwt: &str) -> Option<(String, &'static str)> {
    let claims = entra_token::unverified_claims(jwt)?;
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    if let Some(name) = text("xms_mirid")
        .and_then(|id| id.rsplit('/').next())
        .filter(|s| !s.is_empty())
    {
        return Some((name.to_string(), "xms_mirid"));
    }
    if let Some(upn) = text("upn") {
        return Some((upn.to_string(), "upn"));
    }
    text("preferred_username").map(|u| (u.to_string(), "preferred_username"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn jwt(claims: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.sig", e.encode(r#"{"alg":"RS256"}"#), e.encode(claims))
    }

    #[test]
    fn prefers_the_managed_identity_name_then_upn() {
        let mi = jwt(
            r#"{"xms_mirid":"/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/orders-api","upn":"x@y"}"#,
        );
        assert_eq!(user_from_token(&mi), Some(("orders-api".into(), "xms_mirid")));
        assert_eq!(
            user_from_token(&jwt(r#"{"upn":"ana@contoso.com"}"#)),
            Some(("ana@contoso.com".into(), "upn"))
        );
        assert_eq!(
            user_from_token(&jwt(r#"{"preferred_username":"bob@contoso.com"}"#)),
            Some(("bob@contoso.com".into(), "preferred_username"))
        );
        assert_eq!(user_from_token(&jwt(r#"{"oid":"1"}"#)), None);
        assert_eq!(user_from_token("not a jwt"), None);
    }
}
