//! A plan as libpq's environment variables, for running psql or another libpq client.

use std::path::Path;

use super::{ConnectionPlan, Roots};
use crate::config::ConfigError;
use crate::tls::Verification;

impl ConnectionPlan {
    /// libpq's environment variables for the same connection (`PGHOST`, `PGSSLMODE` in force…), for
    /// running `psql` or another libpq client. `bundle` is a PEM file of the built-in roots for libpq
    /// when the plan uses them (libpq cannot read ours); the password is not included.
    ///
    /// A host name that would carry a token without TLS is resolved and checked here, as for the
    /// plan's own connections, and libpq is given the checked addresses (`PGHOSTADDR`), so it cannot
    /// resolve the name to anything else.
    pub async fn libpq_env(&self, bundle: Option<&Path>) -> Result<Vec<(&'static str, String)>, ConfigError> {
        let join = |items: &mut dyn Iterator<Item = String>| items.collect::<Vec<_>>().join(",");
        let (hosts, ports, hostaddrs) = match self.pinned_targets().await? {
            Some(targets) => (
                join(&mut targets.iter().map(|t| t.0.to_string())),
                join(&mut targets.iter().map(|t| t.2.to_string())),
                Some(join(&mut targets.iter().map(|t| t.1.to_string()))),
            ),
            None => (
                self.hosts.join(","),
                join(&mut self.ports.iter().map(ToString::to_string)),
                (!self.hostaddrs.is_empty())
                    .then(|| join(&mut self.hostaddrs.iter().map(ToString::to_string))),
            ),
        };
        let mut env = vec![
            ("PGHOST", hosts),
            ("PGPORT", ports),
            ("PGDATABASE", self.dbname.clone()),
            (
                "PGSSLMODE",
                self.tls
                    .verification
                    .map_or("disable", Verification::as_sslmode)
                    .to_string(),
            ),
        ];
        if let Some(role) = &self.role {
            env.push(("PGUSER", role.clone()));
        }
        if let Some(hostaddrs) = hostaddrs {
            env.push(("PGHOSTADDR", hostaddrs));
        }
        match (&self.tls.roots, self.tls.verification) {
            (_, None) | (_, Some(Verification::Unverified)) => {}
            (Roots::File { path, .. }, Some(_)) => env.push(("PGSSLROOTCERT", path.display().to_string())),
            (Roots::BuiltIn, Some(_)) => {
                if let Some(bundle) = bundle {
                    env.push(("PGSSLROOTCERT", bundle.display().to_string()));
                }
            }
        }
        if let Some(attrs) = &self.settings.target_session_attrs {
            env.push(("PGTARGETSESSIONATTRS", attrs.value.as_str().to_string()));
        }
        if let Some(app) = &self.settings.application_name {
            env.push(("PGAPPNAME", app.value.clone()));
        }
        if let Some(options) = &self.settings.options {
            env.push(("PGOPTIONS", options.value.clone()));
        }
        if let Some(timeout) = &self.settings.connect_timeout {
            env.push(("PGCONNECT_TIMEOUT", timeout.value.as_secs().to_string()));
        }
        Ok(env)
    }
}
