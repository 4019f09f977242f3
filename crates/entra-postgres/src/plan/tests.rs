//! The plan's rules and settings, one behaviour per test.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::parse_connection_string;

fn plan(text: &str, options: &PlanOptions) -> Result<ConnectionPlan, ConfigError> {
    ConnectionPlan::new(&parse_connection_string(text).unwrap(), options)
}

fn verification(text: &str) -> Option<&'static str> {
    plan(text, &PlanOptions::default())
        .unwrap()
        .tls()
        .verification
        .map(Verification::as_sslmode)
}

#[test]
fn verify_full_is_the_default() {
    assert_eq!(verification("host=db.example.com"), Some("verify-full"));
}

#[test]
fn require_verifies_fully_with_the_built_in_roots() {
    assert_eq!(
        verification("host=db.example.com sslmode=require"),
        Some("verify-full")
    );
    assert_eq!(
        verification("host=db.example.com sslmode=require sslrootcert=system"),
        Some("verify-full")
    );
}

#[test]
fn require_skips_verification_only_when_asked_by_name() {
    let options = PlanOptions::default().danger_accept_unverified_tls(true);
    let p = plan("host=db.example.com sslmode=require", &options).unwrap();
    assert!(p.tls().is_unverified());
    assert!(p.tls().reason.contains("NOT verified"), "{}", p.tls().reason);
    let full = plan("host=db.example.com", &options).unwrap();
    assert!(
        !full.tls().is_unverified(),
        "the option only changes what require means"
    );
}

#[test]
fn cleartext_to_a_remote_host_name_is_refused_even_with_a_loopback_address() {
    let err = plan(
        "host=db.example.com hostaddr=127.0.0.1 sslmode=disable",
        &PlanOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::CleartextToken { host, .. } if host == "db.example.com"),
        "{err}"
    );
    assert!(plan("host=localhost sslmode=disable", &PlanOptions::default()).is_ok());
    assert!(plan(
        "host=localhost hostaddr=127.0.0.1 sslmode=disable",
        &PlanOptions::default()
    )
    .is_ok());
    assert!(plan(
        "host=db.example.com sslmode=disable",
        &PlanOptions::new(CredentialKind::StaticPassword)
    )
    .is_ok());
}

#[test]
fn cleartext_to_a_remote_hostaddr_is_refused_even_with_a_loopback_name() {
    let err = plan(
        "host=localhost hostaddr=10.0.0.5 sslmode=disable",
        &PlanOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::CleartextToken { host, .. } if host.contains("10.0.0.5")),
        "{err}"
    );
}

#[test]
fn a_unix_socket_host_with_a_hostaddr_is_refused_whatever_the_mode() {
    for mode in ["disable", "require", "verify-full"] {
        let err = plan(
            &format!("host=/var/run/postgresql hostaddr=10.0.0.5 sslmode={mode}"),
            &PlanOptions::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("hostaddr") || format!("{err:?}").contains("hostaddr"),
            "{err}"
        );
    }
    let unix = plan("host=/var/run/postgresql", &PlanOptions::default()).unwrap();
    assert_eq!(unix.tls().verification, None, "a unix socket alone needs no TLS");
}

#[test]
fn a_password_is_refused_with_tokens() {
    let err = plan("host=h password=hunter2", &PlanOptions::default()).unwrap_err();
    assert!(matches!(err, ConfigError::PasswordNotAllowed { .. }), "{err}");
    assert!(!err.to_string().contains("hunter2"));
}

#[tokio::test]
async fn libpq_gets_the_mode_in_force() {
    let p = plan(
        "host=db.example.com sslmode=require user=app",
        &PlanOptions::default(),
    )
    .unwrap();
    let env = p.libpq_env(Some(Path::new("/tmp/roots.pem"))).await.unwrap();
    assert!(env.contains(&("PGSSLMODE", "verify-full".to_string())), "{env:?}");
    assert!(
        env.contains(&("PGSSLROOTCERT", "/tmp/roots.pem".to_string())),
        "{env:?}"
    );
    assert!(env.contains(&("PGUSER", "app".to_string())), "{env:?}");
}

#[test]
fn dead_connections_are_noticed_within_seconds_by_default() {
    let p = plan("host=db.example.com user=app", &PlanOptions::default()).unwrap();
    let c = p.config();
    assert!(c.get_keepalives());
    assert_eq!(c.get_keepalives_idle(), Duration::from_secs(10));
    assert_eq!(c.get_keepalives_interval(), Some(Duration::from_secs(5)));
    assert_eq!(c.get_keepalives_retries(), Some(3));
    assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(20)));
    let tuned = plan(
        "host=h user=app keepalives_idle=30 keepalives_count=2 tcp_user_timeout=5000",
        &PlanOptions::default(),
    )
    .unwrap();
    assert_eq!(tuned.config().get_keepalives_idle(), Duration::from_secs(30));
    assert_eq!(tuned.config().get_keepalives_retries(), Some(2));
    assert_eq!(
        tuned.config().get_tcp_user_timeout(),
        Some(&Duration::from_secs(5))
    );
}

#[tokio::test]
async fn several_hosts_take_one_port_or_one_each() {
    let p = plan(
        "host=writer.example.com,reader.example.com port=5432,6432 target_session_attrs=read-write user=a",
        &PlanOptions::default(),
    )
    .unwrap();
    assert_eq!(p.ports(), [5432, 6432]);
    assert_eq!(
        p.config().get_target_session_attrs(),
        tokio_postgres::config::TargetSessionAttrs::ReadWrite
    );
    let env = p.libpq_env(None).await.unwrap();
    assert!(env.contains(&("PGPORT", "5432,6432".to_string())), "{env:?}");
    assert!(
        env.contains(&("PGTARGETSESSIONATTRS", "read-write".to_string())),
        "{env:?}"
    );
    assert!(plan("host=a,b,c port=1,2 user=u", &PlanOptions::default()).is_err());
    let err = parse_connection_string("host=a target_session_attrs=prefer-standby").unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
}

#[tokio::test]
async fn localhost_with_a_token_in_cleartext_is_connected_to_by_its_checked_addresses() {
    let p = plan(
        "host=localhost port=6000 sslmode=disable user=app",
        &PlanOptions::default(),
    )
    .unwrap();
    assert!(p.checks_addresses(0, "localhost"));
    let checked = p.loopback_addresses("localhost", 6000).await.unwrap();
    assert!(
        !checked.is_empty() && checked.iter().all(|a| a.ip().is_loopback()),
        "{checked:?}"
    );
    let pinned = p.pinned_config().await.unwrap().unwrap();
    assert_eq!(pinned.get_hostaddrs().len(), checked.len());
    assert!(pinned.get_hostaddrs().iter().all(IpAddr::is_loopback));
    assert!(pinned.get_ports().iter().all(|port| *port == 6000));
    let env = p.libpq_env(None).await.unwrap();
    let hostaddr = env
        .iter()
        .find(|(k, _)| *k == "PGHOSTADDR")
        .map(|(_, v)| v.clone());
    assert!(hostaddr.is_some_and(|a| a
        .split(',')
        .all(|a| a.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()))));
}

#[tokio::test]
async fn addresses_and_tls_need_no_check_by_address() {
    for text in [
        "host=127.0.0.1 sslmode=disable user=app",
        "host=/tmp sslmode=disable user=app",
        "host=localhost sslmode=verify-full user=app",
    ] {
        let p = plan(text, &PlanOptions::default()).unwrap();
        assert!(p.pinned_config().await.unwrap().is_none(), "{text}");
    }
    let static_password = plan(
        "host=localhost sslmode=disable user=app",
        &PlanOptions::new(CredentialKind::StaticPassword),
    )
    .unwrap();
    assert!(static_password.pinned_config().await.unwrap().is_none());
}

#[test]
fn an_abstract_socket_is_refused_so_no_path_reads_it_as_a_host_name() {
    for text in [
        "host=@db.example.com user=app",
        "host=@db.example.com sslmode=disable user=app",
        "host=/tmp,@x user=app",
    ] {
        let err = plan(text, &PlanOptions::default()).unwrap_err();
        assert!(err.to_string().contains("abstract unix sockets"), "{text}: {err}");
    }
}

#[test]
fn a_socket_directory_beside_a_name_is_refused_with_a_token_in_cleartext() {
    let err = plan(
        "host=/tmp,localhost sslmode=disable user=app",
        &PlanOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("unix-socket directory"), "{err}");
}
