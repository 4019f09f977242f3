//! An error with its causes on one line, for a test's panic message: the emulator's errors leave their
//! cause (the I/O error behind a failed bind) out of their own message and return it from `source()`.

/// Each layer of `error`'s chain, joined by `: `.
pub fn report(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}
