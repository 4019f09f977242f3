//! The README's quick start, compiled and run as a user runs it: configuration from the process's
//! environment (here the emulator's variables), nothing else.

use std::time::Duration;

/// The README's quick start, line for line (checked below against README.md).
async fn quick_start() -> Result<String, Box<dyn std::error::Error>> {
    let pool = entra_pool::postgres::PoolBuilder::from_env().build().await?; // a deadpool_postgres::Pool inside
    let client = pool.get().await?;
    let row = client.query_one("SELECT current_user", &[]).await?;
    Ok(row.get(0))
}

#[test]
fn the_readme_shows_this_very_quick_start() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let source = std::fs::read_to_string(file!()).expect("this file");
    let body = source
        .split("async fn quick_start()")
        .nth(1)
        .and_then(|rest| rest.split("Ok(row.get(0))").next())
        .expect("the function");
    let code = |l: &str| l.split("//").next().unwrap_or_default().trim().to_string();
    let readme_code: Vec<String> = readme.lines().map(code).collect();
    let lines: Vec<String> = body.lines().map(code).filter(|l| l.starts_with("let ")).collect();
    assert_eq!(lines.len(), 3, "{body}");
    for line in &lines {
        assert!(
            readme_code.contains(line),
            "README.md lacks the quick start's line: {line}"
        );
    }
}

// One test in this binary: it sets the process environment, which no other test shares.
#[tokio::test(flavor = "multi_thread")]
async fn the_quick_start_signs_in_against_the_emulator_from_the_environment() {
    let emulator = entra_testkit::emulator(Duration::from_secs(3600)).await;
    for (name, value) in emulator.env_vars() {
        std::env::set_var(name, value);
    }
    let user = entra_testkit::bounded(60, "the quick start", quick_start())
        .await
        .unwrap_or_else(|e| panic!("{}", entra_pool::postgres::report(e.as_ref())));
    assert_eq!(user, emulator.user());
    assert_eq!(emulator.identity().token_requests(), 1);
}
