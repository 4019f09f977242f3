//! The role the gate checks is the role PostgreSQL signs in: the gate's reading of a connection's first
//! packet held to PostgreSQL's own (`check_gate_reading`, the property `tests/proptest_gate.rs` runs).
#![no_main]

#[path = "../../crates/entra-emulator/tests/common/postgres_startup.rs"]
mod postgres_startup;

use libfuzzer_sys::fuzz_target;
use postgres_startup::{check_gate_reading, first_bytes, PROTOCOL_3};

fuzz_target!(|data: &[u8]| {
    // Random bytes rarely carry a true length field and the protocol 3.0 code, so most inputs get both
    // and become the parameters; an input starting with 0 is the whole packet as it is.
    let packet = match data.split_first() {
        Some((0, whole)) => whole.to_vec(),
        Some((_, parameters)) => first_bytes(PROTOCOL_3, parameters),
        None => Vec::new(),
    };
    if let Err(difference) = check_gate_reading(&packet) {
        panic!("{difference}");
    }
});
