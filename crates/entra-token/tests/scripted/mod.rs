//! Test scaffolding for the refresher and the chain: a scripted token source and a log capture.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use entra_token::{AccessToken, FetchFuture, TokenError, TokenSource};
use parking_lot::Mutex;
use tokio::time::Instant;

/// What the scripted source does on one fetch.
#[derive(Clone, Debug)]
pub enum Step {
    /// Succeed with a token of this lifetime.
    Token(Duration),
    /// Fail with this error.
    Fail(TokenError),
}

/// A source that follows a script, then repeats its default step; records when each fetch started.
#[derive(Debug, Clone)]
pub struct Scripted {
    inner: Arc<ScriptedInner>,
}

#[derive(Debug)]
pub struct ScriptedInner {
    script: Mutex<VecDeque<Step>>,
    default: Mutex<Step>,
    delay: Mutex<Duration>,
    fetches: Mutex<Vec<Instant>>,
    issued: Mutex<Vec<String>>,
    counter: AtomicUsize,
    dropped: Arc<AtomicBool>,
}

impl Drop for ScriptedInner {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl Scripted {
    pub fn new(default: Step) -> Self {
        Scripted {
            inner: Arc::new(ScriptedInner {
                script: Mutex::new(VecDeque::new()),
                default: Mutex::new(default),
                delay: Mutex::new(Duration::ZERO),
                fetches: Mutex::new(Vec::new()),
                issued: Mutex::new(Vec::new()),
                counter: AtomicUsize::new(0),
                dropped: Arc::new(AtomicBool::new(false)),
            }),
        }
    }
    pub fn tokens(lifetime: Duration) -> Self {
        Self::new(Step::Token(lifetime))
    }
    pub fn then(self, step: Step) -> Self {
        self.inner.script.lock().push_back(step);
        self
    }
    pub fn set_default(&self, step: Step) {
        *self.inner.default.lock() = step;
    }
    pub fn set_delay(&self, d: Duration) {
        *self.inner.delay.lock() = d;
    }
    pub fn fetch_count(&self) -> usize {
        self.inner.fetches.lock().len()
    }
    pub fn fetch_times(&self) -> Vec<Instant> {
        self.inner.fetches.lock().clone()
    }
    pub fn issued(&self) -> Vec<String> {
        self.inner.issued.lock().clone()
    }
    /// A flag set when the last clone of this source is dropped (the refresher task has ended).
    pub fn dropped_flag(&self) -> Arc<AtomicBool> {
        self.inner.dropped.clone()
    }
}

pub fn transient() -> TokenError {
    TokenError::Transient {
        source_name: "scripted".into(),
        reason: "HTTP 503 from the endpoint".into(),
        status: Some(503),
        retry_after: None,
    }
}

impl TokenSource for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn fetch<'a>(&'a self, _scope: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            self.inner.fetches.lock().push(Instant::now());
            let delay = *self.inner.delay.lock();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let step = self
                .inner
                .script
                .lock()
                .pop_front()
                .unwrap_or_else(|| self.inner.default.lock().clone());
            match step {
                Step::Token(lifetime) => {
                    let n = self.inner.counter.fetch_add(1, Ordering::SeqCst);
                    let secret =
                        format!("eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLW{n:04}.U0lHTkFUVVJFX1NFQ1JFVA");
                    self.inner.issued.lock().push(secret.clone());
                    Ok(AccessToken::new(secret, SystemTime::now() + lifetime))
                }
                Step::Fail(e) => Err(e),
            }
        })
    }
}

/// Captures every log line (any level) written while the guard lives, on this thread.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
