//! Property tests of the Azure CLI source's output parsing, through a fake `az` that prints whatever
//! the test wrote: no output makes it panic, a valid one parses whatever else it carries, and no error
//! quotes the token.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use entra_token::{AccessToken, AzureCliSource, Env, TokenError, TokenSource, OSSRDBMS_SCOPE};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// The tests' fake `az` scripts, each printing the file `<its name>.out`. All are written once, before
/// any is run: writing an executable while another thread forks makes exec fail with "text file busy".
const SCRIPTS: &[&str] = &["arbitrary", "valid", "errors"];

fn scripts_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for name in SCRIPTS {
            let script = dir.path().join(name);
            std::fs::write(&script, "#!/bin/sh\ncat \"$0.out\"\n").unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    })
    .path()
}

/// One test's fake `az`, and a runtime to call it from.
struct FakeAz {
    script: PathBuf,
    out: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl FakeAz {
    fn new(name: &str) -> Self {
        assert!(SCRIPTS.contains(&name), "add {name} to SCRIPTS");
        let script = scripts_dir().join(name);
        let out = scripts_dir().join(format!("{name}.out"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        FakeAz { script, out, rt }
    }

    fn fetch(&self, printed: &[u8]) -> Result<AccessToken, TokenError> {
        std::fs::write(&self.out, printed).unwrap();
        let source = AzureCliSource::new()
            .program(&self.script)
            .env(Env::from_pairs([("PATH", "/usr/bin:/bin")]))
            .timeout(Duration::from_secs(30));
        self.rt.block_on(source.fetch(OSSRDBMS_SCOPE))
    }
}

fn token_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{8,24}\\.[A-Za-z0-9_-]{8,24}\\.[A-Za-z0-9_-]{8,24}".prop_map(|t| format!("SECRET{t}"))
}

fn extra_fields() -> impl Strategy<Value = Map<String, Value>> {
    let value = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        ".{0,16}".prop_map(Value::String),
        prop::collection::vec(".{0,6}", 0..3).prop_map(|v| json!(v)),
    ];
    prop::collection::btree_map(
        "[a-zA-Z_]{1,12}".prop_filter("not a field the parser reads", |k| {
            !["accessToken", "expiresOn", "expires_on"].contains(&k.as_str())
        }),
        value,
        0..5,
    )
    .prop_map(|m| m.into_iter().collect())
}

/// 48 cases (each runs a process), unless `PROPTEST_CASES` asks for more (TESTING.md).
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 48;
    }
    config
}

proptest! {
    // Each case runs a process: few cases keep this file within a couple of seconds.
    #![proptest_config(config())]

    #[test]
    fn arbitrary_output_never_panics(printed in prop::collection::vec(any::<u8>(), 0..256)) {
        let az = FakeAz::new("arbitrary");
        if let Ok(token) = az.fetch(&printed) {
            prop_assert!(!token.secret().is_empty());
        }
    }

    #[test]
    fn valid_output_with_any_extra_fields_parses(
        token in token_text(),
        expires_on in 0u64..=253_402_300_799,
        as_string in any::<bool>(),
        extra in extra_fields(),
    ) {
        let az = FakeAz::new("valid");
        let mut fields = extra;
        fields.insert("accessToken".into(), json!(token));
        fields.insert(
            "expires_on".into(),
            if as_string { json!(expires_on.to_string()) } else { json!(expires_on) },
        );
        let parsed = az
            .fetch(Value::Object(fields).to_string().as_bytes())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed.secret(), token.as_str());
        prop_assert_eq!(parsed.expires_on(), SystemTime::UNIX_EPOCH + Duration::from_secs(expires_on));
    }

    #[test]
    fn errors_never_quote_the_token(
        token in token_text(),
        expiry in prop_oneof![Just(None), Just(Some(json!("soon"))), Just(Some(json!(-5))), Just(Some(json!({})))],
        extra in extra_fields(),
        cut in any::<prop::sample::Index>(),
    ) {
        let az = FakeAz::new("errors");
        let mut fields = extra;
        fields.insert("accessToken".into(), json!(token));
        if let Some(e) = expiry {
            fields.insert("expires_on".into(), e);
        }
        let whole = Value::Object(fields).to_string();
        let truncated = &whole.as_bytes()[..cut.index(whole.len())];
        for printed in [whole.as_bytes(), truncated] {
            if let Err(e) = az.fetch(printed) {
                let shown = format!("{e} {e:?}");
                prop_assert!(!shown.contains(&token), "{} leaks the token", shown);
            }
        }
    }
}
