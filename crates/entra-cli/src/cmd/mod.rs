//! One module per subcommand.

pub(crate) mod bench;
pub(crate) mod demo;
pub(crate) mod doctor;
pub(crate) mod emulate;
pub(crate) mod grant;
pub(crate) mod proxy;
pub(crate) mod psql;
pub(crate) mod token;
