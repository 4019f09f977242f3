//! Every way of fetching a token. Each module speaks one endpoint's protocol as
//! `shared/azure-protocols.md` describes it.

mod azure_cli;
mod chain;
mod static_token;

// pub use azure_cli::AzureCliSource;
// pub use chain::{ChainSource, DefaultSource};
pub use static_token::StaticSource;
