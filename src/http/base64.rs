//! Standard base64 (RFC 4648 §4, with `=` padding), encode only: peek returns message bodies
//! as `body_base64`. A page of code does not justify a dependency.

/// The RFC 4648 §4 alphabet.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Every 12-bit group's two base64 symbols: one lookup per 12 bits instead of per 6.
const PAIRS: [[u8; 2]; 4096] = {
    let mut t = [[0u8; 2]; 4096];
    let mut i = 0;
    while i < 4096 {
        t[i] = [ALPHABET[i >> 6], ALPHABET[i & 0x3f]];
        i += 1;
    }
    t
};

/// Appends the base64 encoding of `bytes` to `out` (ASCII). The output is sized once and
/// filled in place, two table lookups per three input bytes (peek renders up to 1 MiB of
/// bodies on the loop thread).
pub fn encode_into(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    let whole = bytes.len() / 3;
    out.resize(start + whole * 4, 0);
    for (o, c) in out[start..].chunks_exact_mut(4).zip(bytes.chunks_exact(3)) {
        let n = usize::from(c[0]) << 16 | usize::from(c[1]) << 8 | usize::from(c[2]);
        let [a, b] = PAIRS[n >> 12];
        let [c, d] = PAIRS[n & 0xfff];
        o.copy_from_slice(&[a, b, c, d]);
    }
    let sym = |n: u32, shift: u32| ALPHABET[(n >> shift & 0x3f) as usize];
    // The last 1 or 2 bytes give 2 or 3 significant characters, then padding.
    match *bytes.chunks_exact(3).remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[sym(n, 18), sym(n, 12), b'=', b'=']);
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend_from_slice(&[sym(n, 18), sym(n, 12), sym(n, 6), b'=']);
        }
        _ => {}
    }
}

/// The base64 encoding of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut v = Vec::new();
    encode_into(&mut v, bytes);
    // cannot fail because: the alphabet and `=` are ASCII.
    String::from_utf8(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_test_vectors() {
        // RFC 4648 §10.
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), coded, "{plain:?}");
        }
    }

    #[test]
    fn appends_after_what_the_buffer_holds() {
        let mut out = b"{\"body_base64\":\"".to_vec();
        encode_into(&mut out, b"foobar!");
        assert_eq!(out, b"{\"body_base64\":\"Zm9vYmFyIQ==");
    }

    #[test]
    fn every_byte_value_and_the_last_alphabet_characters() {
        assert_eq!(encode(&[0xfb, 0xff, 0xbf]), "+/+/");
        assert_eq!(encode(&[0, 0, 0]), "AAAA");
        let all: Vec<u8> = (0..=255).collect();
        let s = encode(&all);
        assert_eq!(s.len(), 344);
        assert!(
            s.starts_with("AAECAwQFBgcICQoL") && s.ends_with("/P3+/w=="),
            "{s}"
        );
    }
}
