//! `entra-pg grant`: create an identity's principal and grant it a database, as the Entra admin.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use entra_postgres::{EntraConfig, EntraPool, Grant, GrantStatements, ObjectType, PoolBuilder};

use crate::exit::{CliError, Exit};

/// What kind of Entra object a principal created by object id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PrincipalType {
    /// A managed identity or a service principal.
    Service,
    /// A user.
    User,
    /// A group.
    Group,
}

impl From<PrincipalType> for ObjectType {
    fn from(kind: PrincipalType) -> Self {
        match kind {
            PrincipalType::Service => ObjectType::Service,
            PrincipalType::User => ObjectType::User,
            PrincipalType::Group => ObjectType::Group,
        }
    }
}

/// Arguments of `grant`.
#[derive(Debug, Args)]
pub(crate) struct GrantArgs {
    /// The principal's name: a managed identity's or group's display name, or a user's UPN
    /// (case-sensitive; it becomes the role name).
    identity: String,
    /// Create the principal by object id (pgaadauth_create_principal_with_oid), for names the tenant
    /// lookup cannot resolve.
    #[arg(long, value_name = "OID")]
    object_id: Option<String>,
    /// The object's type, with --object-id.
    #[arg(long = "type", value_enum, default_value_t = PrincipalType::Service, requires = "object_id")]
    principal_type: PrincipalType,
    /// The database to grant (default: the configured database, else `postgres`).
    #[arg(long, value_name = "D")]
    database: Option<String>,
    /// The schema to grant.
    #[arg(long, value_name = "S", default_value = "public")]
    schema: String,
    /// Make the principal an Entra admin too.
    #[arg(long)]
    admin: bool,
    /// Default privileges apply to tables later created by this role (default: the role running grant).
    #[arg(long, value_name = "ROLE")]
    owner: Option<String>,
    /// Skip creating the principal (it exists already): only the GRANTs.
    #[arg(long)]
    grants_only: bool,
    /// Print the SQL instead of running it.
    #[arg(long)]
    dry_run: bool,
}

impl GrantArgs {
    /// What the flags ask for, as the library's [`Grant`].
    fn grant(&self, database: &str) -> Grant {
        let mut grant = Grant::new(&self.identity, database)
            .schema(&self.schema)
            .admin(self.admin)
            .grants_only(self.grants_only);
        if let Some(oid) = &self.object_id {
            grant = grant.object_id(oid, self.principal_type.into());
        }
        if let Some(owner) = &self.owner {
            grant = grant.owner(owner);
        }
        grant
    }
}

pub(crate) async fn run(args: GrantArgs) -> Result<ExitCode, CliError> {
    let configured = EntraConfig::from_env().resolve()?;
    let database = args
        .database
        .clone()
        .or_else(|| configured.dbname.map(|d| d.value))
        .unwrap_or_else(|| "postgres".to_string());
    let plan: GrantStatements = args
        .grant(&database)
        .statements()
        .map_err(|e| CliError::new(Exit::Usage, e.to_string()))?;
    if args.dry_run {
        print!("{}", plan.script());
        return Ok(ExitCode::SUCCESS);
    }

    let admin = PoolBuilder::new(EntraConfig::from_env().dbname("postgres"))
        .max_size(1)
        .build()
        .await?;
    if !plan.on_postgres.is_empty() {
        execute(&admin, "postgres", &plan.on_postgres).await?;
        println!("created principal {:?} (on postgres)", args.identity);
    }
    let on_database = EntraConfig::from_env().dbname(&database);
    let target = match admin.tokens() {
        Some(tokens) => PoolBuilder::new(on_database.token_handle(tokens.clone())),
        None => PoolBuilder::new(on_database),
    }
    .max_size(1)
    .build()
    .await?;
    execute(&target, &database, &plan.on_database).await?;
    println!(
        "granted {:?} CONNECT on {database:?} and read/write on schema {:?}",
        args.identity, args.schema
    );
    Ok(ExitCode::SUCCESS)
}

async fn execute(pool: &EntraPool, database: &str, statements: &[String]) -> Result<(), CliError> {
    let context = entra_postgres::DiagnosisContext::default().role(pool.role());
    let client = pool.get().await.map_err(|e| {
        let what = format!("cannot connect to {database:?} as {:?}", pool.role());
        CliError::explained(Exit::Failure, &what, &e, &context)
    })?;
    for statement in statements {
        client.batch_execute(statement).await.map_err(|e| {
            let what = format!("on {database:?}: `{statement}` failed");
            CliError::explained(Exit::Failure, &what, &e, &context)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: GrantArgs,
    }

    fn args(argv: &[&str]) -> GrantArgs {
        Wrapper::parse_from(std::iter::once("grant").chain(argv.iter().copied())).args
    }

    #[test]
    fn the_flags_become_the_librarys_grant() {
        let flags = args(&[
            "Team DBAs",
            "--object-id",
            "0000-1",
            "--type",
            "group",
            "--admin",
            "--schema",
            "app",
        ]);
        let expected = Grant::new("Team DBAs", "shop")
            .schema("app")
            .admin(true)
            .object_id("0000-1", ObjectType::Group);
        assert_eq!(flags.grant("shop"), expected);
        let flags = args(&["app", "--grants-only", "--owner", "migrator"]);
        assert_eq!(
            flags.grant("d"),
            Grant::new("app", "d").grants_only(true).owner("migrator")
        );
    }
}
