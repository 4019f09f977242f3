//! The gate's reading of a connection's first packet (StartupMessage, SSLRequest, CancelRequest…).
#![no_main]

use entra_emulator::__fuzz::{first_packet, First};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(First::Startup { params, user, .. }) = first_packet(data) {
        assert!(
            params.iter().all(|(k, _)| !k.is_empty()),
            "an empty key ends the parameters"
        );
        assert!(user.is_none_or(|u| !u.is_empty()));
    }
});
