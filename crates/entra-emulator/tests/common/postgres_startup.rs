//! StartupMessages built by hand, PostgreSQL's own reading of one, and the property the gate's reading
//! is held to against it. Included by path in `tests/gate.rs`, `tests/proptest_gate.rs` and the fuzz
//! target `gate_startup_role`, so it uses nothing but `std` and `entra_emulator`.
#![allow(dead_code)]

use entra_emulator::__fuzz::{first_packet, First};

/// The protocol 3.0 version code.
pub const PROTOCOL_3: u32 = 196_608;
/// PostgreSQL's cap on a connection's first packet after its length field (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET_LENGTH: usize = 10_000;

/// A first packet: the length, `code`, then `body` as given (no terminator added).
pub fn first_bytes(code: u32, body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The name/value pairs of a StartupMessage body, each NUL-terminated, without the final terminator.
pub fn pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(params: &[(K, V)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in params {
        body.extend_from_slice(k.as_ref());
        body.push(0);
        body.extend_from_slice(v.as_ref());
        body.push(0);
    }
    body
}

/// A well-formed protocol 3.0 StartupMessage carrying `params` in this order (repeats included).
pub fn startup<K: AsRef<[u8]>, V: AsRef<[u8]>>(params: &[(K, V)]) -> Vec<u8> {
    let mut body = pairs(params);
    body.push(0);
    first_bytes(PROTOCOL_3, &body)
}

/// Why PostgreSQL ends a connection whose first packet is `packet` (the FATAL it sends, or the wait
/// for bytes that never come).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Fewer bytes than the length field announces: the server waits, then gives up.
    Incomplete,
    /// "invalid length of startup packet".
    Length,
    /// Not a protocol 3 StartupMessage (an SSLRequest, a CancelRequest, protocol 2, garbage…).
    NotProtocol3,
    /// "invalid startup packet layout: expected terminator as last byte".
    Layout,
    /// "no PostgreSQL user name specified in startup packet".
    NoUser,
}

/// A name/value pair as bytes.
pub type Param = (Vec<u8>, Vec<u8>);

/// What PostgreSQL signs a StartupMessage in as.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The role: the last `user` value.
    pub user: Vec<u8>,
    /// The database: the last `database` value, or the role when that is absent or empty.
    pub database: Vec<u8>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "user \"{}\", database \"{}\"",
            self.user.escape_ascii(),
            self.database.escape_ascii()
        )
    }
}

/// The parameters PostgreSQL reads from a connection's first packet, in packet order with repeats, as
/// `ProcessStartupPacket` does it (src/backend/postmaster/postmaster.c up to PostgreSQL 16,
/// src/backend/tcop/backend_startup.c from 17).
///
/// The packet is the length field's worth of bytes (4 to 10 000 after the length field). The body after
/// the version is walked as NUL-terminated name/value pairs within that length, ending at an empty name;
/// a name with no value inside the packet, or a terminator that is not the packet's last byte, is a
/// FATAL layout error. PostgreSQL checks where its walk stopped, not the byte there: a packet whose last
/// byte is a one-byte name (no NUL, no value) passes as if that byte were the terminator (PostgreSQL 15
/// signs such a packet in).
pub fn postgres_params(packet: &[u8]) -> Result<Vec<Param>, Refusal> {
    let len_field = packet.get(..4).ok_or(Refusal::Incomplete)?;
    let len = u32::from_be_bytes([len_field[0], len_field[1], len_field[2], len_field[3]]) as usize;
    if !(4..=MAX_STARTUP_PACKET_LENGTH).contains(&len.wrapping_sub(4)) {
        return Err(Refusal::Length);
    }
    let packet = packet.get(..len).ok_or(Refusal::Incomplete)?;
    let proto = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    if proto >> 16 != 3 {
        return Err(Refusal::NotProtocol3);
    }
    // PostgreSQL's `buf` is the packet after the length field, plus one zero byte so that a string
    // running into the end still ends; `len` is its length without that byte.
    let mut buf = packet[4..].to_vec();
    let len = buf.len();
    buf.push(0);
    let cstr = |at: usize| -> &[u8] {
        let end = buf[at..]
            .iter()
            .position(|&b| b == 0)
            .map_or(buf.len(), |n| at + n);
        &buf[at..end]
    };

    let mut offset = 4;
    let mut params = Vec::new();
    while offset < len {
        let name = cstr(offset);
        if name.is_empty() {
            break;
        }
        let value_offset = offset + name.len() + 1;
        if value_offset >= len {
            break;
        }
        let value = cstr(value_offset);
        params.push((name.to_vec(), value.to_vec()));
        offset = value_offset + value.len() + 1;
    }
    if offset != len - 1 {
        return Err(Refusal::Layout);
    }
    Ok(params)
}

/// The role and database PostgreSQL signs a connection's first packet in as: of a repeated name the last
/// value wins (each one overwrites `port->user_name` and friends), a missing or empty `user` is refused,
/// and `database` defaults to the user.
///
/// Only the layout, the role and the database are modelled: GUC values (`options`, `replication`…)
/// are checked later, after authentication, and cannot change which role signs in.
pub fn postgres_reads(packet: &[u8]) -> Result<Session, Refusal> {
    let params = postgres_params(packet)?;
    let last = |name: &[u8]| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let mut user = last(b"user").ok_or(Refusal::NoUser)?;
    let mut database = last(b"database").unwrap_or_else(|| user.clone());
    // "Truncate given database and user names to length of a Postgres name" (byte-wise, to
    // NAMEDATALEN - 1 = 63 bytes), after the database took the user's name.
    user.truncate(63);
    database.truncate(63);
    Ok(Session { user, database })
}

/// Holds the gate's reading of a connection's first packet to PostgreSQL's; `Err` says how it differs.
///
/// - When the gate reads a StartupMessage, the packet it forwards signs in, by PostgreSQL's rule, as
///   the role the gate checked and into the database it recorded; and the client's own packet, had it
///   reached the server, would have named the same role and database.
/// - The gate accepts exactly the StartupMessages PostgreSQL accepts that name each parameter once, are
///   UTF-8 throughout, name no user or database of 64 bytes or more (PostgreSQL cuts those to 63), end
///   with a NUL (not the one byte PostgreSQL lets stand in for it) and fit the
///   gate's 10 000-byte cap; and reads the same parameters.
pub fn check_gate_reading(packet: &[u8]) -> Result<(), String> {
    let gate = first_packet(packet);
    if let Ok(First::Startup {
        user,
        database,
        forwarded,
        ..
    }) = &gate
    {
        let upstream = postgres_reads(forwarded);
        match user {
            Some(role) => {
                let checked = Session {
                    user: role.as_bytes().to_vec(),
                    database: database.as_bytes().to_vec(),
                };
                if upstream.as_ref() != Ok(&checked) {
                    return Err(format!(
                        "the gate checked {checked:?}; the packet it forwards signs in as {upstream:?}"
                    ));
                }
                if let Ok(original) = postgres_reads(packet) {
                    if original != checked {
                        return Err(format!(
                            "the gate checked {checked:?}; the client's packet names {original:?}"
                        ));
                    }
                }
            }
            None if upstream != Err(Refusal::NoUser) => {
                return Err(format!(
                    "the gate read no user; the packet it forwards signs in as {upstream:?}"
                ));
            }
            None => {}
        }
    }

    let declared = packet
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize);
    let last_byte = declared.and_then(|len| packet.get(len.checked_sub(1)?));
    match (postgres_params(packet), &gate) {
        // PostgreSQL's cap leaves room for 4 bytes more than the gate's.
        (Ok(_), Err(_)) if declared > Some(MAX_STARTUP_PACKET_LENGTH) => Ok(()),
        (Ok(_), Err(_)) if last_byte != Some(&0) => Ok(()),
        (Ok(params), _) => {
            let mut by_name = params.clone();
            by_name.sort();
            let repeats = by_name.windows(2).any(|w| w[0].0 == w[1].0);
            let utf8 = params
                .iter()
                .all(|(k, v)| std::str::from_utf8(k).is_ok() && std::str::from_utf8(v).is_ok());
            // The gate refuses a user or database name PostgreSQL would cut to 63 bytes.
            let long_name = params
                .iter()
                .any(|(k, v)| (k == b"user" || k == b"database") && v.len() >= 64);
            match gate {
                Ok(First::Startup { params: read, .. }) if !repeats && utf8 && !long_name => {
                    let read: Vec<Param> = read
                        .iter()
                        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                        .collect();
                    if read == by_name {
                        Ok(())
                    } else {
                        Err(format!("the gate read {read:?}; PostgreSQL reads {by_name:?}"))
                    }
                }
                Err(_) if repeats || !utf8 || long_name => Ok(()),
                other => Err(format!(
                    "PostgreSQL reads {params:?} (a name repeats: {repeats}, UTF-8: {utf8}); \
                     the gate: {other:?}"
                )),
            }
        }
        (Err(Refusal::NotProtocol3), Ok(First::Startup { .. })) => {
            Err("the gate read a StartupMessage in what is no protocol 3 packet".into())
        }
        (Err(Refusal::NotProtocol3), _) => Ok(()),
        (Err(refusal), Ok(read)) => Err(format!(
            "PostgreSQL refuses the packet ({refusal:?}); the gate reads {read:?}"
        )),
        (Err(_), Err(_)) => Ok(()),
    }
}
