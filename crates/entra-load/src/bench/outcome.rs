//! [`run_mode`]: the benchmark `entra-pg bench` runs, chosen by [`Mode`].

use super::config::{BenchConfig, Mode};
use super::cycles::run;
use super::report::BenchReport;
use crate::error::LoadError;
use crate::event::Event;
use crate::proxy_bench::{self, ProxyBenchConfig, ProxyBenchReport};
use crate::proxy_connect::{self, ProxyConnectConfig, ProxyConnectReport};

/// What [`run_mode`] ran.
// Not non_exhaustive: a front end must show every kind of report, so a new mode should break its match.
#[derive(Debug)]
pub enum BenchOutcome {
    /// The load benchmark ([`run`]): checkout or multiplexed mode.
    Load(Box<BenchReport>),
    /// The proxy benchmark ([`proxy_bench::run`]).
    Proxy(ProxyBenchReport),
    /// The connect benchmark of the proxy ([`proxy_connect::run`]).
    ProxyConnect(ProxyConnectReport),
}

/// Runs the benchmark `config.mode` names: [`run`] for the checkout and multiplexed modes;
/// [`proxy_bench::run`] for [`Mode::Proxy`], with `config.connections` pgbench clients and the same run
/// duration and cycles (the other settings do not apply to it); [`proxy_connect::run`] for
/// [`Mode::ProxyConnect`], the same with the sign-in delay.
pub async fn run_mode(
    config: BenchConfig,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<BenchOutcome, LoadError> {
    match config.mode {
        Mode::Proxy => {
            let proxy = ProxyBenchConfig::new(config.connections, config.run_duration, config.cycles);
            proxy_bench::run(proxy, on_event).await.map(BenchOutcome::Proxy)
        }
        Mode::ProxyConnect => {
            let connect = ProxyConnectConfig::new(
                config.connections,
                config.run_duration,
                config.cycles,
                config.sign_in_delay,
            );
            proxy_connect::run(connect, on_event)
                .await
                .map(BenchOutcome::ProxyConnect)
        }
        Mode::Checkout | Mode::Multiplexed => run(config, on_event)
            .await
            .map(|r| BenchOutcome::Load(Box::new(r))),
    }
}
