//! What the demo runs.

use std::time::Duration;

use crate::error::LoadError;

/// What to run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DemoConfig {
    /// Concurrent tasks running queries (more than connections, so tasks wait for the pool).
    pub tasks: usize,
    /// The pool's size.
    pub connections: usize,
    /// How long the load lasts.
    pub duration: Duration,
    /// Lifetime of each token the emulator issues: at least 2 s.
    pub token_lifetime: Duration,
    /// Connections retire after about this long (at least 100 ms), so they are re-created on new tokens.
    pub max_lifetime: Duration,
    /// Halfway through, the failover drill with the gate away this long ([`crate::failover`]); `None`:
    /// no drill.
    pub failover_pause: Option<Duration>,
    /// How often the run reports [`Event::Progress`](crate::Event::Progress).
    pub progress_every: Duration,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            tasks: 64,
            connections: 16,
            duration: Duration::from_secs(30),
            token_lifetime: Duration::from_secs(5),
            max_lifetime: Duration::from_millis(2000),
            failover_pause: None,
            progress_every: Duration::from_secs(5),
        }
    }
}

impl DemoConfig {
    /// Refuses what cannot run, saying what it must be.
    pub(crate) fn check(&self) -> Result<(), LoadError> {
        let too_small = self.tasks == 0
            || self.connections == 0
            || self.duration.as_secs() == 0
            || self.token_lifetime < Duration::from_secs(2);
        match too_small {
            true => Err(LoadError::invalid(
                "tasks, connections and the duration (in seconds) must be at least 1, the token lifetime \
                 at least 2 s",
            )),
            false => Ok(()),
        }
    }
}
