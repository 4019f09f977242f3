//! How results look: ✓/✗ and colours on a terminal, plain words when piped.

use std::io::IsTerminal;

/// Marks and colours for one output stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    fancy: bool,
}

impl Style {
    /// Fancy only when stdout is a terminal and `NO_COLOR` is unset.
    pub(crate) fn stdout() -> Self {
        Style {
            fancy: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub(crate) fn ok(self) -> &'static str {
        if self.fancy {
            "\x1b[32m✓\x1b[0m"
        } else {
            "ok  "
        }
    }

    pub(crate) fn warn(self) -> &'static str {
        if self.fancy {
            "\x1b[33m!\x1b[0m"
        } else {
            "WARN"
        }
    }

    pub(crate) fn fail(self) -> &'static str {
        if self.fancy {
            "\x1b[31m✗\x1b[0m"
        } else {
            "FAIL"
        }
    }
}
