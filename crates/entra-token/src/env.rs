//! [`Env`]: where sources read their environment variables, so tests need not touch the process's.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Where environment variables come from: the process (the default) or a fixed map (tests, or a
/// configuration system of your own).
///
/// ```
/// use entra_token::Env;
/// let env = Env::from_pairs([("AZURE_CLIENT_ID", "abc")]);
/// assert_eq!(env.var("AZURE_CLIENT_ID").as_deref(), Some("abc"));
/// assert_eq!(env.var("AZURE_TENANT_ID"), None);
/// ```
#[derive(Clone, Default)]
pub struct Env(Option<Arc<HashMap<String, String>>>);

impl Env {
    /// The process's environment, read at each call (so rotating variables such as `IDENTITY_HEADER`
    /// are seen).
    pub fn process() -> Self {
        Env(None)
    }

    /// A fixed set of variables; the process's environment is ignored.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Env(Some(Arc::new(
            pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        )))
    }

    /// A variable's value; an empty value counts as unset, as the Azure SDKs do.
    pub fn var(&self, name: &str) -> Option<String> {
        let value = match &self.0 {
            None => std::env::var(name).ok(),
            Some(map) => map.get(name).cloned(),
        };
        value.filter(|v| !v.trim().is_empty())
    }
}

impl fmt::Debug for Env {
    // Values may be secrets (AZURE_CLIENT_SECRET): show only where they come from.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("Env::process"),
            Some(map) => write!(f, "Env::from_pairs({} variables)", map.len()),
        }
    }
}
