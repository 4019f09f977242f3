//! `entra-pg grant`: create an identity's principal and grant it a database, as the Entra admin.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use entra_postgres::{EntraPool, PoolBuilder};

use entra_postgres::sql::{ident, literal, QuoteError};

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

impl PrincipalType {
    fn as_str(self) -> &'static str {
        match self {
            PrincipalType::Service => "service",
            PrincipalType::User => "user",
            PrincipalType::Group => "group",
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

/// The statements, per database.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// On `postgres` (pgaadauth_* exist only there); empty with `--grants-only`.
    pub(crate) on_postgres: Vec<String>,
    /// The database granted.
    pub(crate) database: String,
    /// On that database.
    pub(crate) on_database: Vec<String>,
}

/// Both statement lists start with this, so the `''`-only quoting of literals holds on any server.
const STANDARD_STRINGS: &str = "SET standard_conforming_strings = on";

impl GrantArgs {
    pub(crate) fn plan(&self, database: &str) -> Result<Plan, QuoteError> {
        let role = ident("identity", &self.identity)?;
        let name = literal("identity", &self.identity)?;
        let schema = ident("schema", &self.schema)?;
        let db = ident("database", database)?;
        let mut on_postgres = Vec::new();
        if !self.grants_only {
            on_postgres.push(STANDARD_STRINGS.to_string());
            on_postgres.push(match &self.object_id {
                None => format!(
                    "SELECT * FROM pgaadauth_create_principal({name}, {}, false)",
                    self.admin
                ),
                Some(oid) => format!(
                    "SELECT * FROM pgaadauth_create_principal_with_oid({name}, {}, {}, {}, false)",
                    literal("object id", oid)?,
                    literal("type", self.principal_type.as_str())?,
                    self.admin
                ),
            });
        }
        let for_role = match &self.owner {
            Some(owner) => format!("FOR ROLE {} ", ident("owner", owner)?),
            None => String::new(),
        };
        let on_database = vec![
            STANDARD_STRINGS.to_string(),
            format!("GRANT CONNECT ON DATABASE {db} TO {role}"),
            format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}"),
            format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"),
            format!(
                "ALTER DEFAULT PRIVILEGES {for_role}IN SCHEMA {schema} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}"
            ),
            format!(
                "ALTER DEFAULT PRIVILEGES {for_role}IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role}"
            ),
        ];
        Ok(Plan {
            on_postgres,
            database: database.to_string(),
            on_database,
        })
    }
}

impl Plan {
    /// The plan as a script with a comment naming the database each part runs on.
    pub(crate) fn script(&self) -> String {
        let mut out = String::new();
        if !self.on_postgres.is_empty() {
            out.push_str("-- as the Entra admin, connected to the database \"postgres\":\n");
            for s in &self.on_postgres {
                out.push_str(s);
                out.push_str(";\n");
            }
            out.push('\n');
        }
        // The name passed quoting checks: no control characters, so it cannot end the comment line.
        out.push_str(&format!(
            "-- connected to the database {}:\n",
            ident("database", &self.database).unwrap_or_default()
        ));
        for s in &self.on_database {
            out.push_str(s);
            out.push_str(";\n");
        }
        out
    }
}

pub(crate) async fn run(args: GrantArgs) -> Result<ExitCode, CliError> {
    let configured = PoolBuilder::from_env().resolve()?;
    let database = args
        .database
        .clone()
        .or_else(|| configured.dbname.map(|d| d.value))
        .unwrap_or_else(|| "postgres".to_string());
    let plan = args
        .plan(&database)
        .map_err(|e| CliError::new(Exit::Usage, e.to_string()))?;
    if args.dry_run {
        print!("{}", plan.script());
        return Ok(ExitCode::SUCCESS);
    }

    let admin = PoolBuilder::from_env()
        .max_size(1)
        .dbname("postgres")
        .build()
        .await?;
    if !plan.on_postgres.is_empty() {
        execute(&admin, "postgres", &plan.on_postgres).await?;
        println!("created principal {:?} (on postgres)", args.identity);
    }
    let target = match admin.tokens() {
        Some(tokens) => PoolBuilder::from_env().token_handle(tokens.clone()),
        None => PoolBuilder::from_env(),
    }
    .max_size(1)
    .dbname(&database)
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
    let context = entra_postgres::DiagnosisContext::default().role(pool.user());
    let client = pool.get().await.map_err(|e| {
        let what = format!("cannot connect to {database:?} as {:?}", pool.user());
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
    fn creates_by_name_then_grants_the_schema() {
        let plan = args(&["orders-api", "--schema", "app"]).plan("shop").unwrap();
        assert_eq!(
            plan.on_postgres[1],
            "SELECT * FROM pgaadauth_create_principal('orders-api', false, false)"
        );
        assert!(plan
            .on_database
            .contains(&r#"GRANT CONNECT ON DATABASE "shop" TO "orders-api""#.to_string()));
        assert!(plan.on_database.contains(
            &r#"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "app" TO "orders-api""#.to_string()
        ));
    }

    #[test]
    fn object_id_form_names_the_type_and_admin() {
        let plan = args(&["Team DBAs", "--object-id", "0000-1", "--type", "group", "--admin"])
            .plan("postgres")
            .unwrap();
        assert_eq!(
            plan.on_postgres[1],
            "SELECT * FROM pgaadauth_create_principal_with_oid('Team DBAs', '0000-1', 'group', true, false)"
        );
    }

    #[test]
    fn grants_only_skips_the_principal_and_owner_scopes_default_privileges() {
        let plan = args(&["app", "--grants-only", "--owner", "migrator"])
            .plan("d")
            .unwrap();
        assert!(plan.on_postgres.is_empty());
        assert!(plan.on_database[5]
            .starts_with(r#"ALTER DEFAULT PRIVILEGES FOR ROLE "migrator" IN SCHEMA "public""#));
    }

    #[test]
    fn a_name_with_a_newline_is_refused() {
        assert!(args(&["a\nDROP TABLE x"]).plan("d").is_err());
    }
}
