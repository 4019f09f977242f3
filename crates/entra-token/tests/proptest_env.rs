//! Property tests of building sources from environment variables: any values (URLs, garbage, blanks)
//! give a source or a configuration error, never a panic, and neither shows a secret variable's value.

use entra_token::{
    ClientSecretSource, DefaultSource, Env, HttpOptions, ManagedIdentitySource, UserAssignedId,
    WorkloadIdentitySource,
};
use proptest::prelude::*;

/// Variables whose values are secrets.
const SECRET_VARS: &[&str] = &["AZURE_CLIENT_SECRET", "IDENTITY_HEADER", "MSI_SECRET"];

/// Every variable a source reads to decide what it is and where it goes.
const PLAIN_VARS: &[&str] = &[
    "AZURE_AUTHORITY_HOST",
    "AZURE_CLIENT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_TENANT_ID",
    "IDENTITY_ENDPOINT",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSAL_MANAGED_IDENTITY_ENDPOINT",
    "MSI_ENDPOINT",
];

fn plain_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("  ".to_string()),
        "(http|https|ftp|)://(127\\.0\\.0\\.1|localhost|\\[::1\\]|login\\.example\\.com|)(:[0-9]{1,6})?(/[a-z/?=&%.]{0,12})?",
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "/[a-z/]{0,20}",
        ".{0,24}",
    ]
}

fn env_vars() -> impl Strategy<Value = Vec<(String, String)>> {
    let plain = PLAIN_VARS
        .iter()
        .map(|name| proptest::option::of(plain_value()).prop_map(move |v| v.map(|v| (name.to_string(), v))))
        .collect::<Vec<_>>();
    let secret = SECRET_VARS
        .iter()
        .map(|name| {
            proptest::option::of("SECRETVALUE[A-Za-z0-9]{8,16}")
                .prop_map(move |v| v.map(|v| (name.to_string(), v)))
        })
        .collect::<Vec<_>>();
    (plain, secret).prop_map(|(p, s)| p.into_iter().chain(s).flatten().collect())
}

fn user_assigned_id() -> impl Strategy<Value = Option<UserAssignedId>> {
    proptest::option::of(prop_oneof![
        ".{0,40}".prop_map(UserAssignedId::ClientId),
        ".{0,40}".prop_map(UserAssignedId::ObjectId),
        ".{0,80}".prop_map(UserAssignedId::ResourceId),
    ])
}

fn assert_no_secret(shown: &str, vars: &[(String, String)]) -> Result<(), TestCaseError> {
    for (name, value) in vars {
        if SECRET_VARS.contains(&name.as_str()) {
            prop_assert!(!shown.contains(value.as_str()), "{} is shown: {}", name, shown);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn any_environment_builds_a_source_or_an_error_without_secrets(
        vars in env_vars(),
        id in user_assigned_id(),
    ) {
        let env = Env::from_pairs(vars.clone());
        let shown = match ManagedIdentitySource::detect(&env, id, HttpOptions::default()) {
            Ok(source) => format!("{source:?} {}", source.kind()),
            Err(e) => format!("{e} {e:?}"),
        };
        assert_no_secret(&shown, &vars)?;

        let shown = match WorkloadIdentitySource::from_env(&env, HttpOptions::default()) {
            Ok(source) => format!("{source:?}"),
            Err(e) => format!("{e} {e:?}"),
        };
        assert_no_secret(&shown, &vars)?;

        let shown = match ClientSecretSource::from_env(&env, HttpOptions::default()) {
            Ok(source) => format!("{source:?}"),
            Err(e) => format!("{e} {e:?}"),
        };
        assert_no_secret(&shown, &vars)?;

        let chain = DefaultSource::builder().env(env.clone()).exclude_cli(true).build();
        assert_no_secret(&format!("{chain:?} {:?}", chain.names()), &vars)?;
        prop_assert!(!chain.names().is_empty());
        assert_no_secret(&format!("{env:?}"), &vars)?;
    }
}
