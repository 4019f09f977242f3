//! A token endpoint's response body: any bytes give a token or an error, never a panic.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    match entra_token::__fuzz::parse_token_response(body, now) {
        Ok(token) => assert!(!token.secret().is_empty(), "an accepted token is never empty"),
        Err(e) => drop(format!("{e} {e:?}")),
    }
});
