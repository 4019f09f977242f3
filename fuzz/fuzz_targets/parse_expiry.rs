//! `parse_expiry`: any text gives an instant or `None`, never a panic; plain digits are epoch seconds.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let parsed = entra_token::__fuzz::parse_expiry(text);
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let epoch = trimmed
            .parse::<u64>()
            .ok()
            .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)));
        assert_eq!(parsed, epoch, "digits are epoch seconds");
    }
});
