//! What a run reports while it goes on, for a front end to show.
//!
//! The engine never prints: every function that takes a while takes an `on_event: &(dyn Fn(Event) +
//! Sync)` and calls it at each step, on the run's own task. The caller decides where the line goes (a
//! terminal, a progress bar, a log, nowhere). Each event's `Display` is the line `entra-pg` shows for it,
//! so every front end words it the same way.

use std::fmt;
use std::time::Duration;

use crate::workload::Mix;

/// One step of a run, in the order they happen.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The local emulator is starting (PostgreSQL, the fake identity endpoint, the gate): a few seconds.
    EmulatorStarting,
    /// A cycle of the interleaved runs begins.
    Cycle {
        /// Its number, from 1.
        number: usize,
        /// How many cycles there are.
        of: usize,
    },
    /// A load run through the gate begins (`gate`, `bystander` or `no-spares`).
    GateRun {
        /// Which run.
        label: &'static str,
        /// Concurrent tasks.
        tasks: usize,
        /// The pool's size.
        connections: usize,
        /// The role the pool signs in as.
        user: String,
        /// What each operation does.
        mix: Mix,
        /// How long the run lasts.
        duration: Duration,
        /// Lifetime of the emulator's tokens.
        token_lifetime: Duration,
    },
    /// The bystander control stopped, after this many sessions signed in and out beside the load.
    BystanderSessions {
        /// Sessions that completed.
        sessions: u64,
    },
    /// Plain deadpool-postgres through the gate begins.
    PlainRun {
        /// Concurrent tasks.
        tasks: usize,
        /// The pool's size.
        connections: usize,
        /// When its connections retire.
        lifetime: Duration,
    },
    /// The same load straight at PostgreSQL begins (superuser, static password).
    DirectRun,
    /// A `pgbench -S -M prepared` run begins.
    Pgbench {
        /// Its `-c`.
        clients: usize,
        /// Its `-T`.
        duration: Duration,
        /// Where it connects, when the run compares several (`gate`, `proxy`, `relay`, `socat`).
        through: Option<&'static str>,
    },
    /// A `pgbench -C` run begins (a connection per transaction, at a fixed rate).
    ConnectRun {
        /// Its `-c`.
        clients: usize,
        /// Its `-T`.
        duration: Duration,
        /// Its `-R` (`None`: full speed).
        rate: Option<u32>,
        /// Where it connects: `gate`, `proxy` or `proxy-warm`.
        through: &'static str,
        /// Idle loopback sockets the bench holds meanwhile.
        idle_sockets: usize,
    },
    /// pgbench is not installed: the benchmark goes on without its runs.
    PgbenchSkipped,
    /// socat is not installed: the proxy benchmark goes on without the C relay's run.
    SocatMissing,
    /// The demo's load begins.
    DemoRunning {
        /// Concurrent tasks.
        tasks: usize,
        /// The pool's size.
        connections: usize,
        /// The role the pool signs in as.
        user: String,
        /// How long the load lasts.
        duration: Duration,
        /// Lifetime of the emulator's tokens.
        token_lifetime: Duration,
    },
    /// Where a running load stands, at the interval the caller asked for.
    Progress(Progress),
    /// The failover drill takes the server away.
    FailoverBegins {
        /// For how long the gate accepts nothing.
        pause: Duration,
    },
    /// The failover drill is over: the pool served a statement again.
    ServedAgain,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::EmulatorStarting => {
                f.write_str("starting the local emulator (PostgreSQL, fake IMDS, Entra gate)…")
            }
            Event::Cycle { number, of } => write!(f, "cycle {number}/{of}"),
            Event::GateRun {
                label,
                tasks,
                connections,
                user,
                mix,
                duration,
                token_lifetime,
            } => write!(
                f,
                "  {label}: {tasks} tasks on a pool of {connections} as {user:?}, {} mix, {} s, tokens live {} s",
                mix.name(),
                duration.as_secs(),
                token_lifetime.as_secs()
            ),
            Event::BystanderSessions { sessions } => {
                write!(f, "  bystander: {sessions} sessions signed in and out beside the load")
            }
            Event::PlainRun {
                tasks,
                connections,
                lifetime,
            } => write!(
                f,
                "  plain deadpool through the gate: {tasks} tasks, pool of {connections}, connections retire \
                 after {} ms",
                lifetime.as_millis()
            ),
            Event::DirectRun => {
                f.write_str("  direct: the same load against PostgreSQL itself (superuser, static password)")
            }
            Event::Pgbench {
                clients,
                duration,
                through,
            } => {
                write!(f, "  pgbench -S -M prepared -c {clients} -j 2 -T {}", duration.as_secs())?;
                match through {
                    Some(target) => write!(f, " ({target})…"),
                    None => f.write_str("…"),
                }
            }
            Event::ConnectRun {
                clients,
                duration,
                rate,
                through,
                idle_sockets,
            } => {
                write!(f, "  pgbench -n -C -S -c {clients} -j 2")?;
                if let Some(rate) = rate {
                    write!(f, " -R {rate}")?;
                }
                write!(f, " -T {} ({through}", duration.as_secs())?;
                if *idle_sockets > 0 {
                    write!(f, ", beside {idle_sockets} idle sockets")?;
                }
                f.write_str(")…")
            }
            Event::PgbenchSkipped => {
                f.write_str("pgbench is not installed (Debian: postgresql-contrib); skipping it")
            }
            Event::SocatMissing => {
                f.write_str("socat is not installed: no C relay run (apt-get install socat adds one)")
            }
            Event::DemoRunning {
                tasks,
                connections,
                user,
                duration,
                token_lifetime,
            } => write!(
                f,
                "running {tasks} tasks on a pool of {connections} as {user:?} for {} s; tokens live {} s…",
                duration.as_secs(),
                token_lifetime.as_secs()
            ),
            Event::Progress(p) => write!(f, "[{:>3} s] {p}", p.elapsed.as_secs()),
            Event::FailoverBegins { pause } => write!(
                f,
                "failover drill: the server goes away for {} s…",
                pause.as_secs()
            ),
            Event::ServedAgain => f.write_str("failover drill: served again"),
        }
    }
}

/// Where a running load stands.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Progress {
    /// Time since the load began.
    pub elapsed: Duration,
    /// How long the load lasts in all.
    pub duration: Duration,
    /// Acknowledged operations per second since the last report.
    pub rate: f64,
    /// Token renewals since the first token.
    pub rotations: u64,
    /// Failed operations so far.
    pub errors: u64,
}

/// `  1234 queries/s   rotations 2   errors 0`: the line without its time, for a progress bar's message.
impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>7.0} queries/s   rotations {}   errors {}",
            self.rate, self.rotations, self.errors
        )
    }
}

/// An `on_event` that drops every event, for callers that show nothing.
pub fn ignore(_: Event) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_reads_as_the_line_entra_pg_shows() {
        let pgbench = |through| Event::Pgbench {
            clients: 16,
            duration: Duration::from_secs(20),
            through,
        };
        assert_eq!(
            pgbench(None).to_string(),
            "  pgbench -S -M prepared -c 16 -j 2 -T 20…"
        );
        assert_eq!(
            pgbench(Some("proxy")).to_string(),
            "  pgbench -S -M prepared -c 16 -j 2 -T 20 (proxy)…"
        );
        let plain = Event::PlainRun {
            tasks: 64,
            connections: 16,
            lifetime: Duration::from_millis(5000),
        };
        let progress = Event::Progress(Progress {
            elapsed: Duration::from_millis(5400),
            duration: Duration::from_secs(30),
            rate: 1234.4,
            rotations: 2,
            errors: 0,
        });
        assert_eq!(
            progress.to_string(),
            "[  5 s]    1234 queries/s   rotations 2   errors 0"
        );
        assert_eq!(
            plain.to_string(),
            "  plain deadpool through the gate: 64 tasks, pool of 16, connections retire after 5000 ms"
        );
    }
}
