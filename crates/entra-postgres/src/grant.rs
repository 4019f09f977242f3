//! [`Grant`]: the SQL that creates an Entra principal and grants it a database, for an Entra admin to run
//! (`entra-pg grant` runs it; `--dry-run` prints it). Every name is quoted by [`crate::sql`].

use crate::sql::{ident, literal, QuoteError};

/// What kind of Entra object a principal created by object id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectType {
    /// A managed identity or a service principal.
    Service,
    /// A user.
    User,
    /// A group.
    Group,
}

impl ObjectType {
    /// The name `pgaadauth_create_principal_with_oid` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Service => "service",
            ObjectType::User => "user",
            ObjectType::Group => "group",
        }
    }
}

/// What to create and grant: a principal (by name, or by object id) and read/write on a database's
/// schema.
///
/// ```
/// let sql = entra_postgres::Grant::new("orders-api", "shop").schema("app").statements().unwrap();
/// assert_eq!(sql.on_postgres[1], "SELECT * FROM pgaadauth_create_principal('orders-api', false, false)");
/// assert!(sql.on_database.contains(&r#"GRANT CONNECT ON DATABASE "shop" TO "orders-api""#.to_string()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Grant {
    identity: String,
    database: String,
    object_id: Option<(String, ObjectType)>,
    schema: String,
    admin: bool,
    owner: Option<String>,
    grants_only: bool,
}

/// The statements, per database.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrantStatements {
    /// On `postgres` (the `pgaadauth_*` functions exist only there); empty with
    /// [`grants_only`](Grant::grants_only).
    pub on_postgres: Vec<String>,
    /// The database granted.
    pub database: String,
    /// On that database.
    pub on_database: Vec<String>,
}

/// Both statement lists start with this, so the `''`-only quoting of literals holds on any server.
const STANDARD_STRINGS: &str = "SET standard_conforming_strings = on";

impl Grant {
    /// The principal `identity` (a managed identity's or group's display name, or a user's UPN;
    /// case-sensitive, it becomes the role name), granted `database`'s `public` schema.
    pub fn new(identity: impl Into<String>, database: impl Into<String>) -> Self {
        Grant {
            identity: identity.into(),
            database: database.into(),
            object_id: None,
            schema: "public".into(),
            admin: false,
            owner: None,
            grants_only: false,
        }
    }

    /// Create the principal by object id (`pgaadauth_create_principal_with_oid`), for names the tenant
    /// lookup cannot resolve.
    pub fn object_id(mut self, oid: impl Into<String>, kind: ObjectType) -> Self {
        self.object_id = Some((oid.into(), kind));
        self
    }

    /// The schema to grant (default `public`).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Make the principal an Entra admin too.
    pub fn admin(mut self, admin: bool) -> Self {
        self.admin = admin;
        self
    }

    /// Default privileges apply to tables later created by this role (default: the role running them).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Skip creating the principal (it exists already): only the GRANTs.
    pub fn grants_only(mut self, only: bool) -> Self {
        self.grants_only = only;
        self
    }

    /// The statements, every name quoted; a name that cannot be (a NUL, a control character) is refused.
    pub fn statements(&self) -> Result<GrantStatements, QuoteError> {
        let role = ident("identity", &self.identity)?;
        let name = literal("identity", &self.identity)?;
        let schema = ident("schema", &self.schema)?;
        let db = ident("database", &self.database)?;
        let mut on_postgres = Vec::new();
        if !self.grants_only {
            on_postgres.push(STANDARD_STRINGS.to_string());
            on_postgres.push(match &self.object_id {
                None => format!(
                    "SELECT * FROM pgaadauth_create_principal({name}, {}, false)",
                    self.admin
                ),
                Some((oid, kind)) => format!(
                    "SELECT * FROM pgaadauth_create_principal_with_oid({name}, {}, {}, {}, false)",
                    literal("object id", oid)?,
                    literal("type", kind.as_str())?,
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
        Ok(GrantStatements {
            on_postgres,
            database: self.database.clone(),
            on_database,
        })
    }
}

impl GrantStatements {
    /// The plan as a script with a comment naming the database each part runs on.
    pub fn script(&self) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_by_name_then_grants_the_schema() {
        let plan = Grant::new("orders-api", "shop")
            .schema("app")
            .statements()
            .unwrap();
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
        let plan = Grant::new("Team DBAs", "postgres")
            .object_id("0000-1", ObjectType::Group)
            .admin(true)
            .statements()
            .unwrap();
        assert_eq!(
            plan.on_postgres[1],
            "SELECT * FROM pgaadauth_create_principal_with_oid('Team DBAs', '0000-1', 'group', true, false)"
        );
    }

    #[test]
    fn grants_only_skips_the_principal_and_owner_scopes_default_privileges() {
        let plan = Grant::new("app", "d")
            .grants_only(true)
            .owner("migrator")
            .statements()
            .unwrap();
        assert!(plan.on_postgres.is_empty());
        assert!(plan.on_database[5]
            .starts_with(r#"ALTER DEFAULT PRIVILEGES FOR ROLE "migrator" IN SCHEMA "public""#));
    }

    #[test]
    fn a_name_with_a_newline_is_refused() {
        assert!(Grant::new("a\nDROP TABLE x", "d").statements().is_err());
    }
}
