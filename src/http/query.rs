//! Go's `net/url` decoding as nsqd sees it: `url.ParseQuery(RawQuery)` for parameters and the
//! path unescaping `url.ParseRequestURI` does before httprouter matches `URL.Path`.
//!
//! Go strings are bytes; ours are `String`, so a decoded byte sequence that is not UTF-8 is
//! converted lossily. Every name nsqd checks is ASCII, so a lossy name fails validation exactly
//! as the raw bytes would.

/// Parsed query parameters, in order of appearance. The first value of a key wins, as with Go's
/// `url.Values.Get` (reference §2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Decoded `(key, value)` pairs; a key without `=` has the value `""`.
    pub pairs: Vec<(String, String)>,
}

impl Query {
    /// The first value of `key`, if the key is present at all.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True if `key` is present, even with an empty value (Go's `_, ok := values[key]`).
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

/// The query string could not be parsed: a bad `%` escape or a `;` separator (Go ≥ 1.17).
/// nsqd answers it with 400 `INVALID_REQUEST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidQuery;

/// Parses a raw query string as Go's `url.ParseQuery` does: `&`-separated, `+` is a space,
/// `%XX` escapes, empty segments skipped. Like Go, the bad segments are skipped and an error is
/// reported; nsqd then refuses the whole request, so the error is all we return.
///
/// # Errors
/// [`InvalidQuery`] if any segment has a `;` or a malformed escape.
pub fn parse_query(raw: &str) -> Result<Query, InvalidQuery> {
    let mut pairs = Vec::new();
    let mut bad = false;
    for seg in raw.split('&') {
        if seg.contains(';') {
            bad = true;
            continue;
        }
        if seg.is_empty() {
            continue;
        }
        let (k, v) = seg.split_once('=').unwrap_or((seg, ""));
        match (unescape(k, true), unescape(v, true)) {
            (Some(k), Some(v)) => pairs.push((k, v)),
            _ => bad = true,
        }
    }
    if bad {
        Err(InvalidQuery)
    } else {
        Ok(Query { pairs })
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`, Go's query-component mode).
/// `None` if a `%` is not followed by two hex digits, as Go's `unescape` fails.
pub fn unescape(s: &str, plus_is_space: bool) -> Option<String> {
    if !s.bytes().any(|b| b == b'%' || (plus_is_space && b == b'+')) {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex)?;
                let lo = bytes.get(i + 2).copied().and_then(hex)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses one of nsqd's boolean parameters (`true/1/false/0`, reference §2.2); anything else,
/// or absence, gives `default`, as nsqd's `boolParams` lookup does.
pub fn bool_param(q: &Query, key: &str, default: bool) -> bool {
    match q.get(key) {
        Some("true" | "1") => true,
        Some("false" | "0") => false,
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &Query) -> Vec<(&str, &str)> {
        q.pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn parses_like_go() {
        let q = parse_query("topic=a&channel=b%20c&x=1+2&flag&&topic=second").unwrap();
        assert_eq!(
            pairs(&q),
            [
                ("topic", "a"),
                ("channel", "b c"),
                ("x", "1 2"),
                ("flag", ""),
                ("topic", "second")
            ]
        );
        assert_eq!(q.get("topic"), Some("a"), "first value wins");
        assert!(q.has("flag"));
        assert_eq!(q.get("flag"), Some(""));
        assert!(!q.has("nope"));
        assert_eq!(parse_query("").unwrap(), Query::default());
        assert_eq!(
            pairs(&parse_query("a=b=c").unwrap()),
            [("a", "b=c")],
            "only the first = splits"
        );
        assert_eq!(pairs(&parse_query("%74opic=x").unwrap()), [("topic", "x")]);
    }

    #[test]
    fn rejects_like_go() {
        for bad in ["a=%", "a=%2", "a=%zz", "%g1=x", "a=1;b=2", "ok=1&a=%"] {
            assert_eq!(parse_query(bad), Err(InvalidQuery), "{bad:?}");
        }
    }

    #[test]
    fn unescape_modes() {
        assert_eq!(unescape("a+b%2Fc", true).as_deref(), Some("a b/c"));
        assert_eq!(unescape("a+b%2Fc", false).as_deref(), Some("a+b/c"));
        assert_eq!(unescape("%", false), None);
        assert_eq!(unescape("%ff", false).as_deref(), Some("\u{fffd}"));
    }

    #[test]
    fn bool_params() {
        let q = parse_query("a=true&b=0&c=yes&d=1&e=false").unwrap();
        assert!(bool_param(&q, "a", false));
        assert!(!bool_param(&q, "b", true));
        assert!(bool_param(&q, "c", true), "unknown value means the default");
        assert!(!bool_param(&q, "c", false));
        assert!(bool_param(&q, "d", false));
        assert!(!bool_param(&q, "e", true));
        assert!(bool_param(&q, "missing", true));
    }
}
