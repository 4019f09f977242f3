//! No token text anywhere: a whole refresh cycle with failures through `ImdsSource` and `FakeIdentity`
//! over real HTTP (plain, then TLS), with every log line of every crate captured at TRACE, and the
//! `Debug`/`Display` of everything a caller can print.
//!
//! Alone in its binary because it installs the process-wide subscriber (and the `log` bridge that
//! reqwest and rustls write through), so the HTTP stack's own threads are captured too.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use entra_emulator::{FakeIdentity, Fault};
use entra_token::{
    AccessToken, ChainSource, Env, HttpOptions, ImdsSource, RefreshPolicy, Refresher, TokenError,
    TokenHandle, TokenSource, OSSRDBMS_SCOPE,
};
use parking_lot::Mutex;
use tokio::time::{sleep, timeout};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything printed about one cycle, and the tokens it received.
#[derive(Default)]
struct Seen {
    tokens: Vec<AccessToken>,
    errors: Vec<TokenError>,
    shown: Vec<String>,
}

impl Seen {
    fn show(&mut self, what: &str, text: String) {
        self.shown.push(format!("{what}: {text}"));
    }
    fn token(&mut self, token: AccessToken) {
        self.show("token", format!("{token:?} {token} {:?}", token.fingerprint()));
        self.tokens.push(token);
    }
    fn error(&mut self, error: TokenError) {
        self.show("error", format!("{error:?} {error}"));
        self.errors.push(error);
    }
    fn handle(&mut self, handle: &TokenHandle) {
        self.show("handle", format!("{handle:?}"));
        self.show("status", format!("{:?}", handle.status()));
    }
}

const HANG: Duration = Duration::from_secs(60);

/// get() until it succeeds, keeping every error it returns on the way.
async fn get_through_failures(handle: &TokenHandle, seen: &mut Seen) -> AccessToken {
    let outcome = timeout(HANG, async {
        loop {
            seen.handle(handle);
            match handle.get().await {
                Ok(token) => return token,
                Err(e) => {
                    seen.error(e);
                    sleep(Duration::from_millis(20)).await;
                }
            }
        }
    })
    .await;
    outcome.expect("a token once the faults are used up")
}

fn invalidate(handle: &TokenHandle, token: &AccessToken) {
    assert!(handle.invalidate(token), "the current token is refetched");
}

/// success, 503, malformed, success, invalidate, success; then one fetch through a chain.
async fn cycle(fake: &FakeIdentity, http: HttpOptions) -> Seen {
    let mut seen = Seen::default();
    let env = Env::from_pairs([("AZURE_POD_IDENTITY_AUTHORITY_HOST", fake.imds_authority())]);
    seen.show("env", format!("{env:?}"));
    seen.show("http options", format!("{http:?}"));
    let source = Arc::new(ImdsSource::builder().env(env).http_options(http).build().unwrap());
    let policy = RefreshPolicy::default()
        .min_invalidate_interval(Duration::ZERO)
        .backoff(Duration::from_millis(50), Duration::from_millis(100));
    let handle = Refresher::spawn(source.clone(), OSSRDBMS_SCOPE, policy);

    let first = get_through_failures(&handle, &mut seen).await;
    seen.token(first.clone());
    fake.push_faults([Fault::status(503), Fault::Malformed]);
    invalidate(&handle, &first);
    let second = get_through_failures(&handle, &mut seen).await;
    seen.token(second.clone());
    invalidate(&handle, &second);
    let third = get_through_failures(&handle, &mut seen).await;
    seen.token(third);
    seen.handle(&handle);
    assert!(
        seen.errors.len() >= 2,
        "get() reported the 503 and the malformed answer: {:?}",
        seen.errors
    );

    let chain = ChainSource::new().with_shared(source.clone());
    fake.push_faults([Fault::Malformed]);
    let err = chain.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    seen.error(err);
    let fourth = chain.fetch(OSSRDBMS_SCOPE).await.unwrap();
    seen.token(fourth);
    seen.show("chain", format!("{chain:?}"));
    seen.show("source", format!("{source:?}"));

    handle.shutdown();
    seen.handle(&handle);
    seen
}

/// The secret and its last 20 characters (a tail is as bad a leak as the whole).
fn needles(tokens: &[AccessToken]) -> Vec<String> {
    tokens
        .iter()
        .flat_map(|t| {
            let secret = t.secret();
            assert!(secret.len() > 40, "a real JWT");
            [secret.to_string(), secret[secret.len() - 20..].to_string()]
        })
        .collect()
}

fn assert_hidden(needles: &[String], haystack: &str, what: &str) {
    for needle in needles {
        if let Some(at) = haystack.find(needle.as_str()) {
            let start = haystack[..at].rfind('\n').map_or(0, |n| n + 1);
            panic!(
                "{what} contains token text (len {}) in the line starting: {}",
                needle.len(),
                &haystack[start..at]
            );
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn no_token_text_in_logs_debug_or_errors() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init()
        .expect("this binary's only test installs the global subscriber");

    let plain = FakeIdentity::start().await.unwrap();
    let mut seen = cycle(&plain, common::http()).await;
    let tls = FakeIdentity::builder().tls(true).start().await.unwrap();
    let tls_seen = cycle(&tls, common::tls_http(&tls)).await;
    seen.tokens.extend(tls_seen.tokens);
    seen.errors.extend(tls_seen.errors);
    seen.shown.extend(tls_seen.shown);

    // Every token the fakes issued is a needle.
    assert_eq!(plain.tokens_issued() + tls.tokens_issued(), seen.tokens.len());
    assert_eq!(seen.tokens.len(), 8);
    let needles = needles(&seen.tokens);

    let logs = capture.text();
    // The capture really holds the cycle: the refresher's events, by fingerprint, and the HTTP stack's.
    for token in &seen.tokens {
        assert!(
            logs.contains(&token.fingerprint().to_string()),
            "no log line names {}",
            token.fingerprint()
        );
    }
    assert!(logs.contains("token_fetch"), "no fetch span in the capture");
    assert!(
        logs.contains("reqwest") || logs.contains("hyper"),
        "the HTTP client's own logs were not captured"
    );
    assert!(
        logs.contains("rustls"),
        "the TLS stack's own logs were not captured"
    );
    assert_hidden(&needles, &logs, "the captured logs");
    for shown in &seen.shown {
        assert_hidden(&needles, shown, "a Debug or Display output");
    }
    for error in &seen.errors {
        let mut chain: Option<&dyn std::error::Error> = Some(error);
        while let Some(e) = chain {
            assert_hidden(&needles, &e.to_string(), "an error's source chain");
            chain = e.source();
        }
    }
}
