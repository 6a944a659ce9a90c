//! Delta application (gitformat-pack(5)): an object rebuilt from its base
//! by copy and insert instructions, every bound checked. Pure; apart from
//! the reader so that it can be tested, and fuzzed, on its own.

use super::{MAX_OBJECT_LEN, RESERVE};

/// A delta's little-endian base-128 size.
fn delta_size(delta: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let b = *delta.get(*pos).ok_or("a delta ends inside its header")?;
        *pos += 1;
        if shift > 63 {
            return Err("a delta size does not fit 64 bits".into());
        }
        value |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// Rebuilds an object from its base and a delta (copy and insert
/// instructions, gitformat-pack(5)), checking every bound.
pub fn apply_delta(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, String> {
    let mut pos = 0;
    let base_len = delta_size(delta, &mut pos)?;
    if base_len != base.len() as u64 {
        return Err(format!(
            "a delta for a base of {base_len} bytes applied to one of {}",
            base.len()
        ));
    }
    let result_len = delta_size(delta, &mut pos)?;
    if result_len > MAX_OBJECT_LEN {
        return Err(format!(
            "a delta result of {result_len} bytes; at most {MAX_OBJECT_LEN}"
        ));
    }
    let result_len = result_len as usize;
    let mut out = Vec::with_capacity(result_len.min(RESERVE));
    while pos < delta.len() {
        let cmd = delta[pos];
        pos += 1;
        if cmd & 0x80 != 0 {
            let mut field = |bits: u8, count: usize| -> Result<usize, String> {
                let mut value = 0usize;
                for i in 0..count {
                    if bits & (1 << i) != 0 {
                        let b = *delta.get(pos).ok_or("a delta ends inside a copy")?;
                        pos += 1;
                        value |= usize::from(b) << (8 * i);
                    }
                }
                Ok(value)
            };
            let offset = field(cmd & 0x0f, 4)?;
            let mut len = field((cmd >> 4) & 0x07, 3)?;
            if len == 0 {
                len = 0x10000;
            }
            let copied = offset
                .checked_add(len)
                .and_then(|end| base.get(offset..end))
                .ok_or("a delta copies from outside its base")?;
            if out.len() + len > result_len {
                return Err("a delta writes past its declared result".into());
            }
            out.extend_from_slice(copied);
        } else if cmd != 0 {
            let len = usize::from(cmd);
            let inserted = delta
                .get(pos..pos + len)
                .ok_or("a delta ends inside an insert")?;
            if out.len() + len > result_len {
                return Err("a delta writes past its declared result".into());
            }
            out.extend_from_slice(inserted);
            pos += len;
        } else {
            return Err("a delta holds the reserved instruction 0".into());
        }
    }
    if out.len() != result_len {
        return Err(format!(
            "a delta builds {} bytes, not the {result_len} it declares",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_bounded() {
        let base = b"0123456789";
        // base size 10, result 4: copy 4 bytes from offset 2.
        assert_eq!(
            apply_delta(base, &[10, 4, 0x91, 2, 4]).expect("copy"),
            b"2345"
        );
        // insert.
        assert_eq!(
            apply_delta(base, &[10, 3, 3, b'a', b'b', b'c']).expect("insert"),
            b"abc"
        );
        for (delta, why) in [
            (&[9, 4, 0x91, 2, 4][..], "wrong base size"),
            (&[10, 4, 0x91, 8, 4][..], "copy past the base"),
            (&[10, 3, 0x91, 2, 4][..], "writes past the result"),
            (&[10, 5, 0x91, 2, 4][..], "result too short"),
            (&[10, 4, 0][..], "reserved instruction"),
            (&[10, 4, 5, b'a'][..], "insert past the end"),
            (&[10][..], "header cut"),
            (&[10, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f][..], "huge result"),
        ] {
            assert!(apply_delta(base, delta).is_err(), "{why}");
        }
    }
}
