//! Every way of fetching a token. Each module speaks one endpoint's protocol as
//! `shared/azure-protocols.md` describes it.

mod app_service;
mod arc;
mod azure_cli;
mod chain;
mod client_secret;
mod cloud_shell;
mod default;
mod entra_endpoint;
mod imds;
mod managed_identity;
mod select;
mod static_token;
mod workload;

pub use app_service::{AppServiceSource, AppServiceSourceBuilder};
pub use arc::{AzureArcSource, AzureArcSourceBuilder};
pub use azure_cli::AzureCliSource;
pub use chain::ChainSource;
pub use client_secret::{ClientSecretSource, ClientSecretSourceBuilder};
pub use cloud_shell::{CloudShellSource, CloudShellSourceBuilder};
pub use default::{DefaultSource, DefaultSourceBuilder};
pub use imds::{ImdsSource, ImdsSourceBuilder};
pub use managed_identity::{ManagedIdentityKind, ManagedIdentitySource, UserAssignedId};
pub use select::{ServicePrincipalSecret, SourceKind, SourceSelection};
pub use static_token::StaticSource;
pub use workload::{WorkloadIdentitySource, WorkloadIdentitySourceBuilder};
