//! The record of every request the fake received, for tests to assert on.

use std::time::Instant;

/// Which fake endpoint a request was for, decided by method-independent path (and, for App Service, the
/// api-version).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /metadata/identity/oauth2/token` (VM/VMSS).
    Imds,
    /// `GET /msi/token` with api-version 2019-08-01 (or any other than 2017-09-01).
    AppService,
    /// `GET /msi/token` with api-version 2017-09-01 (`MSI_ENDPOINT`/`MSI_SECRET`, also Azure ML).
    AppServiceLegacy,
    /// `GET /arc/metadata/identity/oauth2/token` (Azure Arc, with its key-file challenge).
    Arc,
    /// `POST /cloudshell/token`.
    CloudShell,
    /// `POST /{tenant}/oauth2/v2.0/token` (client secret and workload identity).
    EntraToken,
    /// Anything else (answered 404).
    Other,
}

impl Endpoint {
    /// Whether requests to this endpoint are token requests: counted, and subject to faults.
    pub fn is_token_endpoint(self) -> bool {
        self != Endpoint::Other
    }
}

/// Header names and form fields whose values are credentials; [`RecordedRequest`]'s `Debug` hides them.
const SECRET_HEADERS: &[&str] = &["authorization", "x-identity-header", "secret"];
const SECRET_FIELDS: &[&str] = &["client_secret", "client_assertion"];

/// One request as the fake received it, and what it answered.
///
/// The fields hold credentials verbatim (identity headers, client secrets, assertions) so tests can check
/// them; `Debug` redacts them, so printing a request does not leak them.
#[derive(Clone)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// The endpoint the path selected.
    pub endpoint: Endpoint,
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// Decoded `application/x-www-form-urlencoded` body fields (empty for other bodies).
    pub form: Vec<(String, String)>,
    /// The status the fake answered; 0 if it did not answer (closed or held the connection).
    pub status: u16,
    /// When the request was received (fully read).
    pub at: Instant,
}

impl RecordedRequest {
    /// The first query parameter named `key`.
    pub fn query(&self, key: &str) -> Option<&str> {
        lookup(&self.query, key)
    }

    /// The first header named `key` (case-insensitive).
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The first form field named `key`.
    pub fn form(&self, key: &str) -> Option<&str> {
        lookup(&self.form, key)
    }
}

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Pairs with the values of secret names replaced, for `Debug`.
fn redacted<'a>(pairs: &'a [(String, String)], secret: &[&str]) -> Vec<(&'a str, &'a str)> {
    pairs
        .iter()
        .map(|(k, v)| {
            let shown = if secret.iter().any(|s| k.eq_ignore_ascii_case(s)) {
                "<redacted>"
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
        .collect()
}

impl std::fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordedRequest")
            .field("endpoint", &self.endpoint)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &redacted(&self.headers, SECRET_HEADERS))
            .field("form", &redacted(&self.form, SECRET_FIELDS))
            .field("status", &self.status)
            .field("at", &self.at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_credentials_but_keeps_the_rest() {
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let r = RecordedRequest {
            endpoint: Endpoint::EntraToken,
            method: "POST".into(),
            path: "/t/oauth2/v2.0/token".into(),
            query: vec![],
            headers: pairs(&[
                ("authorization", "Basic c2VjcmV0"),
                ("x-identity-header", "hdr-secret"),
            ]),
            form: pairs(&[
                ("client_secret", "pw-secret"),
                ("client_assertion", "jwt-secret"),
                ("client_id", "app-1"),
            ]),
            status: 200,
            at: Instant::now(),
        };
        let shown = format!("{r:?}");
        for secret in ["c2VjcmV0", "hdr-secret", "pw-secret", "jwt-secret"] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert!(shown.contains("app-1"));
        assert_eq!(r.form("client_secret"), Some("pw-secret"));
        assert_eq!(r.header("Authorization"), Some("Basic c2VjcmV0"));
    }
}
