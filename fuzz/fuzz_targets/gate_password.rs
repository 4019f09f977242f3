//! The gate's reading of a PasswordMessage (where the client sends its token).
#![no_main]

use entra_emulator::__fuzz::password_message;
use libfuzzer_sys::fuzz_target;

/// The gate's limit on a PasswordMessage.
const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(password)) = password_message(data, LIMIT) {
        assert!(!password.contains('\0'), "the password ends at the first NUL");
    }
});
