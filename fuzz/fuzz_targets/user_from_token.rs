//! Reading the role name from a token's claims: a name or `None`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Some((name, claim)) = entra_postgres::user_from_token(text) {
        assert!(!name.is_empty(), "an empty {claim} is not a name");
    }
});
