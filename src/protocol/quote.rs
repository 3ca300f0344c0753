//! Go's `strconv.Quote` (what nsqd's `%q` prints), for echoing client-supplied names in
//! error texts exactly as nsqd does.

use std::fmt::Write as _;

/// Go's `strconv.Quote` on raw bytes, as nsqd's `%q` prints names: `"` and `\` escaped,
/// `\a \b \f \n \r \t \v`, other ASCII controls and invalid UTF-8 bytes as `\xNN`, other
/// non-printable characters as `\uNNNN` / `\UNNNNNNNN`.
pub fn go_quote(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len() + 2);
    out.push('"');
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            quote_char(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

fn quote_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        c if c < ' ' || c == '\x7f' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if go_is_print(c) => out.push(c),
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// An approximation of Go's `unicode.IsPrint` for non-ASCII: control, format, separator
/// (other than ASCII space), private-use and non-characters are not printable. Exact for ASCII.
fn go_is_print(c: char) -> bool {
    let u = c as u32;
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    let format_or_sep = matches!(u,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x2028..=0x202e | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb);
    let private = matches!(u, 0xe000..=0xf8ff | 0xf0000..=0x10ffff);
    let nonchar = (u & 0xfffe) == 0xfffe || (0xfdd0..=0xfdef).contains(&u);
    !(c.is_control() || c.is_whitespace() || format_or_sep || private || nonchar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_matches_strconv() {
        assert_eq!(go_quote(b""), "\"\"");
        assert_eq!(go_quote(b"bad!"), "\"bad!\"");
        assert_eq!(
            go_quote(b"\x07\x08\x0c\n\r\t\x0b\x00\x1b"),
            "\"\\a\\b\\f\\n\\r\\t\\v\\x00\\x1b\""
        );
        assert_eq!(
            go_quote("\u{85}\u{200b}é😀".as_bytes()),
            "\"\\u0085\\u200b\u{e9}😀\""
        );
        assert_eq!(go_quote(b"\xc3"), "\"\\xc3\"");
        assert_eq!(go_quote("\u{f0000}".as_bytes()), "\"\\U000f0000\"");
    }
}
