//! Connection strings in every form, given directly and through Service Connector's variable: settings
//! or an error naming the key, never a panic.
#![no_main]

use entra_postgres::__fuzz::settings_from_env;
use entra_postgres::entra_token::Env;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = entra_postgres::parse_connection_string(text) {
        drop(e.to_string());
    }
    let env = Env::from_pairs([("AZURE_POSTGRESQL_CONNECTIONSTRING", text), ("PGHOST", text)]);
    drop(settings_from_env(&env, None));
    drop(entra_postgres::PoolBuilder::from_env().env(env).resolve());
});
