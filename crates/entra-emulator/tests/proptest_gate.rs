//! Property tests of the gate's parsing of a client's first packet (StartupMessage, SSLRequest…) and of
//! its PasswordMessage: no bytes make it panic, well-formed messages read back what they carry, and the
//! role the gate checks is the role PostgreSQL signs in.

#[path = "common/postgres_startup.rs"]
mod postgres_startup;

use entra_emulator::__fuzz::{first_packet, password_message, First};
use postgres_startup::{check_gate_reading, first_bytes as first, pairs, startup, PROTOCOL_3};
use proptest::prelude::*;

/// The gate's limit on a PasswordMessage (a token is a few KiB).
const PASSWORD_LIMIT: usize = 64 * 1024;

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        Just("user".to_string()),
        Just("database".to_string()),
        Just("application_name".to_string()),
        "[^\0]{1,12}",
    ];
    prop::collection::vec((key, "[^\0]{0,24}"), 0..8)
}

/// A parameter name as a client might send it: the ones that decide the session, or others, in ASCII
/// or any bytes but NUL.
fn raw_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(b"user".to_vec()),
        2 => Just(b"database".to_vec()),
        1 => Just(b"options".to_vec()),
        1 => Just(b"application_name".to_vec()),
        2 => "[a-z_.]{1,8}".prop_map(String::into_bytes),
        1 => prop::collection::vec(1u8.., 1..8),
    ]
}

fn raw_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(b"postgres".to_vec()),
        2 => Just(b"app".to_vec()),
        1 => Just(b"-c role=postgres".to_vec()),
        2 => Just(Vec::new()),
        1 => "[ -~]{1,12}".prop_map(String::into_bytes),
        1 => prop::collection::vec(1u8.., 1..12),
    ]
}

/// Bytes of which about half are NUL, the separator of a StartupMessage.
fn nul_rich_bytes(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(0u8), any::<u8>()], len)
}

/// How the parameters of a StartupMessage end.
#[derive(Debug, Clone)]
enum Ending {
    /// With the terminator, as they must.
    Terminator,
    /// Without one.
    Nothing,
    /// With a name and no value.
    NameWithoutValue(Vec<u8>),
    /// With the terminator, then more bytes.
    AfterTerminator(Vec<u8>),
}

/// Any first packet a client might send: parameter lists with repeats (half of them) or without, empty
/// values and bytes that are not UTF-8, ended well or badly, or garbage; under protocol 3.0 mostly; its
/// length field mostly true.
fn raw_startup() -> impl Strategy<Value = Vec<u8>> {
    let user = prop::option::weighted(
        0.75,
        (Just(b"user".to_vec()), raw_value(), any::<prop::sample::Index>()),
    );
    let list = prop::collection::vec((raw_name(), raw_value()), 0..6);
    let params = (list, user, any::<bool>()).prop_map(|(mut params, user, repeats)| {
        if let Some((name, value, at)) = user {
            params.insert(at.index(params.len() + 1), (name, value));
        }
        if !repeats {
            let mut seen = std::collections::HashSet::new();
            params.retain(|(name, _)| seen.insert(name.clone()));
        }
        params
    });
    let ending = prop_oneof![
        12 => Just(Ending::Terminator),
        1 => Just(Ending::Nothing),
        1 => raw_name().prop_map(Ending::NameWithoutValue),
        1 => nul_rich_bytes(1..12).prop_map(Ending::AfterTerminator),
    ];
    let parameters = (params, ending).prop_map(|(params, ending)| {
        let mut body = pairs(&params);
        match ending {
            Ending::Terminator => body.push(0),
            Ending::Nothing => {}
            Ending::NameWithoutValue(name) => {
                body.extend(name);
                body.push(0);
            }
            Ending::AfterTerminator(tail) => {
                body.push(0);
                body.extend(tail);
            }
        }
        body
    });
    let garbage = nul_rich_bytes(0..40);
    let code = prop_oneof![12 => Just(PROTOCOL_3), 1 => Just(PROTOCOL_3 + 2), 1 => any::<u32>()];
    let length_error = prop_oneof![12 => Just(0i64), 1 => -12i64..12];
    (code, prop_oneof![8 => parameters, 1 => garbage], length_error).prop_map(|(code, body, error)| {
        let mut bytes = first(code, &body);
        let len = (bytes.len() as i64 + error).clamp(0, i64::from(u32::MAX)) as u32;
        bytes[..4].copy_from_slice(&len.to_be_bytes());
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn arbitrary_first_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = first_packet(&bytes);
    }

    #[test]
    fn arbitrary_startup_bodies_never_panic(
        code in prop_oneof![Just(PROTOCOL_3), Just(80_877_103u32), Just(80_877_102u32), any::<u32>()],
        body in prop::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..200),
        length_delta in prop_oneof![Just(0i64), -16i64..16, Just(i64::from(u32::MAX))],
    ) {
        let mut bytes = first(code, &body);
        let _ = first_packet(&bytes);
        // A length field that lies about the packet.
        let len = (bytes.len() as i64 + length_delta).clamp(0, i64::from(u32::MAX)) as u32;
        bytes[..4].copy_from_slice(&len.to_be_bytes());
        let _ = first_packet(&bytes);
    }

    #[test]
    fn startup_parameters_read_back_and_a_repeated_name_is_refused(params in params()) {
        let parsed = first_packet(&startup(&params));
        // The gate reads parameters by name (pgwire keeps them in a map).
        let mut by_name = params.clone();
        by_name.sort();
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        // PostgreSQL would cut a user or database name of 64 bytes or more (NAMEDATALEN): the gate refuses
        // it, so that the role it checks is the role signed in.
        let cut_by_postgres = ["user", "database"]
            .iter()
            .any(|name| get(name).is_some_and(|value| value.len() >= 64));
        if by_name.windows(2).any(|w| w[0].0 == w[1].0) || cut_by_postgres {
            prop_assert!(parsed.is_err(), "{:?}", parsed);
        } else {
            let user = get("user").filter(|u| !u.is_empty());
            let database = get("database").filter(|d| !d.is_empty()).or(user.clone()).unwrap_or_default();
            let forwarded = startup(&by_name);
            prop_assert_eq!(parsed, Ok(First::Startup { params: by_name, user, database, forwarded }));
        }
    }

    #[test]
    fn a_startup_cut_short_or_unterminated_is_an_error(params in params(), cut in any::<prop::sample::Index>()) {
        let whole = startup(&params);
        // Drop the final terminator, or cut the packet anywhere inside.
        let mut unterminated = whole[8..whole.len() - 1].to_vec();
        unterminated.pop();
        if !params.is_empty() {
            prop_assert!(first_packet(&first(PROTOCOL_3, &unterminated)).is_err());
        }
        let short = &whole[..cut.index(whole.len())];
        prop_assert!(first_packet(short).is_err());
    }

    #[test]
    fn requests_are_recognised_only_with_their_exact_length(extra in prop::collection::vec(any::<u8>(), 1..16)) {
        prop_assert_eq!(first_packet(&first(80_877_103, &[])), Ok(First::Ssl));
        prop_assert_eq!(first_packet(&first(80_877_104, &[])), Ok(First::GssEnc));
        prop_assert_eq!(first_packet(&first(80_877_102, &[0; 8])), Ok(First::Cancel));
        prop_assert!(first_packet(&first(80_877_103, &extra)).is_err());
        if extra.len() != 8 {
            prop_assert!(first_packet(&first(80_877_102, &extra)).is_err());
        }
    }

    #[test]
    fn arbitrary_message_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..128),
        limit in prop_oneof![Just(PASSWORD_LIMIT), 0usize..64],
    ) {
        let _ = password_message(&bytes, limit);
    }

    #[test]
    fn a_password_message_reads_back_its_password(password in "[^\0]{0,200}", trailing in "[^\0]{0,8}") {
        let mut body = password.clone().into_bytes();
        body.push(0);
        // Bytes after the terminator are not part of the password.
        body.extend_from_slice(trailing.as_bytes());
        prop_assert_eq!(password_message(&message(b'p', &body), PASSWORD_LIMIT), Ok(Some(password.clone())));
        // Another message type carries no password, and an unterminated one is not read past its end.
        prop_assert_eq!(password_message(&message(b'Q', &body), PASSWORD_LIMIT), Ok(None));
        prop_assert_eq!(password_message(&message(b'p', password.as_bytes()), PASSWORD_LIMIT), Ok(None));
    }

    #[test]
    fn an_oversized_password_message_is_refused_without_quoting_it(
        password in "SECRET[A-Za-z0-9]{10,40}",
        limit in 5usize..16,
    ) {
        let mut body = password.clone().into_bytes();
        body.push(0);
        let err = password_message(&message(b'p', &body), limit);
        prop_assert!(err.is_err());
        prop_assert!(!err.unwrap_err().contains(&password));
    }
}

proptest! {
    // Cheap cases, and only about one in five is a sign-in both sides accept: eight times as many as
    // the other properties run (PROPTEST_CASES still scales them).
    #![proptest_config(ProptestConfig {
        cases: ProptestConfig::default().cases.saturating_mul(8),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_role_the_gate_checks_is_the_role_postgresql_signs_in(packet in raw_startup()) {
        check_gate_reading(&packet).map_err(TestCaseError::fail)?;
    }
}
