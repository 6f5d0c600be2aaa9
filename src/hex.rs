//! Lower-case hexadecimal text of bytes: cache key hashes, Redis entry keys, request ids.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Append the lower-case hex of `bytes` to `out`.
pub fn push_hex(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// The lower-case hex of `N` bytes in a stack buffer of `M = 2 * N` ASCII digits (no heap;
/// for per-request ids).
pub fn hex_array<const N: usize, const M: usize>(bytes: [u8; N]) -> [u8; M] {
    let mut out = [b'0'; M];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    out
}

/// The lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(bytes, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_nibble() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
        let mut s = String::from("k:");
        push_hex(&[0x12], &mut s);
        assert_eq!(s, "k:12");
        assert_eq!(&hex_array::<2, 4>([0xab, 0x01]), b"ab01");
    }
}
