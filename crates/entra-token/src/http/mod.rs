//! The HTTP client every token source uses, and the safety rules it enforces.
//!
//! Token requests carry credentials (an `IDENTITY_HEADER`, a client secret, a federated assertion) and
//! return secrets, so the client is deliberately narrow: it never uses a proxy (an `HTTPS_PROXY` meant for
//! other traffic must not see them), never follows a redirect, times out, and reads at most
//! [`HttpOptions::max_body_bytes`] of a body, chunk by chunk, so a hostile or broken endpoint cannot make
//! it buffer megabytes.

mod client;
mod options;
mod trace;

pub(crate) use client::{FailureKind, HttpClient, HttpResponse};
pub use options::HttpOptions;
pub(crate) use trace::traced_fetch;
