//! What the server tasks and the test's handles share: identities, settings, the fault script and the log.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::fault::{Fault, NumberFormat, RateLimit};
use super::http::Request;
use super::log::{Endpoint, RecordedRequest};
use super::principal::{ManagedIdentity, ServicePrincipal};
use crate::jwt::JwtIssuer;

/// Settings a test may change while the server runs.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) lifetime: Duration,
    pub(crate) padding: usize,
    pub(crate) number_format: NumberFormat,
}

/// The directory of principals.
#[derive(Default)]
pub(crate) struct Directory {
    pub(crate) identities: Vec<ManagedIdentity>,
    pub(crate) apps: Vec<ServicePrincipal>,
}

/// Rotating credentials of the App Service and Arc endpoints.
pub(crate) struct Secrets {
    pub(crate) identity_header: String,
    /// The latest Arc key; only it is accepted.
    pub(crate) arc_key: Option<String>,
    /// The file holding the latest Arc key, removed when a new one replaces it.
    pub(crate) arc_key_file: Option<PathBuf>,
}

#[derive(Default)]
struct Faults {
    queue: VecDeque<Fault>,
    persistent: Option<Fault>,
    rate_limit: Option<RateLimit>,
    /// When the requests of the last second that were let through arrived.
    admitted: VecDeque<Instant>,
}

#[derive(Default)]
struct Log {
    requests: Vec<RecordedRequest>,
    token_requests: usize,
    tokens_issued: usize,
}

/// State shared by the server's tasks and every `FakeIdentity` handle.
pub(crate) struct Shared {
    pub(crate) issuer: JwtIssuer,
    pub(crate) system: ManagedIdentity,
    pub(crate) system_assigned: bool,
    pub(crate) arc_key_dir: PathBuf,
    pub(crate) legacy_secret: String,
    pub(crate) settings: Mutex<Settings>,
    pub(crate) directory: Mutex<Directory>,
    pub(crate) secrets: Mutex<Secrets>,
    faults: Mutex<Faults>,
    log: Mutex<Log>,
}

impl Shared {
    pub(crate) fn new(
        system: ManagedIdentity,
        system_assigned: bool,
        arc_key_dir: PathBuf,
        settings: Settings,
        directory: Directory,
    ) -> Shared {
        Shared {
            issuer: JwtIssuer::new(),
            system,
            system_assigned,
            arc_key_dir,
            legacy_secret: super::principal::random_hex(16),
            settings: Mutex::new(settings),
            directory: Mutex::new(directory),
            secrets: Mutex::new(Secrets {
                identity_header: super::principal::random_hex(16),
                arc_key: None,
                arc_key_file: None,
            }),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Log::default()),
        }
    }

    pub(crate) fn settings(&self) -> Settings {
        self.settings.lock().clone()
    }

    pub(crate) fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.faults.lock().queue.extend(faults);
    }

    pub(crate) fn set_persistent_fault(&self, fault: Option<Fault>) {
        self.faults.lock().persistent = fault;
    }

    pub(crate) fn set_rate_limit(&self, limit: Option<RateLimit>) {
        let mut faults = self.faults.lock();
        faults.rate_limit = limit;
        faults.admitted.clear();
    }

    /// The fault for the next token request: the persistent one while it is set (an outage does not end
    /// because a script was queued), else the next queued one, else throttling when the rate limit is
    /// exceeded.
    pub(crate) fn next_fault(&self) -> Option<Fault> {
        let mut faults = self.faults.lock();
        if let Some(fault) = &faults.persistent {
            return Some(fault.clone());
        }
        if let Some(fault) = faults.queue.pop_front() {
            return Some(fault);
        }
        let limit = faults.rate_limit?;
        let now = Instant::now();
        while faults
            .admitted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            faults.admitted.pop_front();
        }
        if faults.admitted.len() >= limit.per_second as usize {
            return Some(Fault::throttled(limit.retry_after_secs));
        }
        faults.admitted.push_back(now);
        None
    }

    /// Logs a request with the status it is about to be answered with (0: none).
    pub(crate) fn record(
        &self,
        endpoint: Endpoint,
        request: &Request,
        at: Instant,
        status: u16,
        issued_token: bool,
    ) {
        let form = if request.body.is_empty() {
            Vec::new()
        } else {
            request.form()
        };
        let recorded = RecordedRequest {
            endpoint,
            method: request.method.clone(),
            path: request.path.clone(),
            query: request.query.clone(),
            headers: request.headers.clone(),
            form,
            status,
            at,
        };
        let mut log = self.log.lock();
        log.requests.push(recorded);
        if endpoint.is_token_endpoint() {
            log.token_requests += 1;
        }
        if issued_token {
            log.tokens_issued += 1;
        }
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.log.lock().requests.clone()
    }

    pub(crate) fn token_requests(&self) -> usize {
        self.log.lock().token_requests
    }

    pub(crate) fn tokens_issued(&self) -> usize {
        self.log.lock().tokens_issued
    }

    pub(crate) fn clear_log(&self) {
        *self.log.lock() = Log::default();
    }
}
