//! Property tests of the gate's parsing of a client's first packet (StartupMessage, SSLRequest…) and of
//! its PasswordMessage: no bytes make it panic, and well-formed messages read back what they carry.

use entra_emulator::__fuzz::{first_packet, password_message, First};
use proptest::prelude::*;

/// The protocol 3.0 version code.
const PROTOCOL_3: u32 = 196_608;
/// The gate's limit on a PasswordMessage (a token is a few KiB).
const PASSWORD_LIMIT: usize = 64 * 1024;

fn first(code: u32, body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn startup(params: &[(String, String)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    first(PROTOCOL_3, &body)
}

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
    fn startup_parameters_read_back(params in params()) {
        let parsed = first_packet(&startup(&params)).map_err(TestCaseError::fail)?;
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let user = get("user").filter(|u| !u.is_empty());
        let database = get("database").filter(|d| !d.is_empty()).or(user.clone()).unwrap_or_default();
        prop_assert_eq!(parsed, First::Startup { params, user, database });
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
