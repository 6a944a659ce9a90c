//! Delta application as a delta streams in, against delta application
//! whole.
//!
//! Input: one byte that sets the size of the pieces the delta is fed in
//! (1 to 256), two bytes (little-endian) for the base's length, the base,
//! then the delta (gitformat-pack(5) copy and insert instructions).
//!
//! Property: no input panics or allocates without bound, and
//! `pack::apply_streamed` (the parser a first boot uses, fed in pieces)
//! agrees with `pack::apply_delta` (the whole-buffer reference): both
//! refuse, or both build the same bytes.

#![no_main]

use driftless::source::pack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [piece, lo, hi, rest @ ..] = data else {
        return;
    };
    let piece = usize::from(*piece) + 1;
    let base_len = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
    let (base, delta) = rest.split_at(base_len);
    let whole = pack::apply_delta(base, delta);
    let streamed = pack::apply_streamed(base, delta, piece);
    match (&whole, &streamed) {
        (Ok(w), Ok(s)) => assert_eq!(w, s, "the same result"),
        (Err(_), Err(_)) => {}
        _ => panic!("whole {whole:?} but streamed {streamed:?}"),
    }
});
