//! Topic and channel name rules (nsqd `internal/protocol/names.go`): the whole name is 1..=64
//! bytes and matches `^[.a-zA-Z0-9_-]+(#ephemeral)?$`. The same rule serves TCP, HTTP and
//! lookupd. A hand-written check replaces the regex: no backtracking on client input.

/// The longest valid name in bytes, `#ephemeral` included.
pub const MAX_NAME_LEN: usize = 64;

/// The suffix that marks a topic or channel as ephemeral.
pub const EPHEMERAL_SUFFIX: &str = "#ephemeral";

/// True if `name` is a valid topic name.
pub fn is_valid_topic_name(name: &str) -> bool {
    is_valid_name(name)
}

/// True if `name` is a valid channel name (same rule as topics in nsqd v1.3.0).
pub fn is_valid_channel_name(name: &str) -> bool {
    is_valid_name(name)
}

/// True if `name` ends in `#ephemeral` (nsqd `strings.HasSuffix`).
pub fn is_ephemeral(name: &str) -> bool {
    name.ends_with(EPHEMERAL_SUFFIX)
}

fn is_valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let base = name.strip_suffix(EPHEMERAL_SUFFIX).unwrap_or(name);
    // `+` in the regex: at least one character before the optional suffix.
    !base.is_empty() && base.bytes().all(is_name_byte)
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for n in ["a", "t1", "a.b-c_d", "...", "x#ephemeral", &"a".repeat(64)] {
            assert!(is_valid_topic_name(n), "{n:?}");
            assert!(is_valid_channel_name(n), "{n:?}");
        }
        let eph = format!("{}#ephemeral", "a".repeat(54));
        assert_eq!(eph.len(), 64);
        assert!(is_valid_topic_name(&eph));
    }

    #[test]
    fn invalid_names() {
        let long = "a".repeat(65);
        let long_eph = format!("{}#ephemeral", "a".repeat(55));
        for n in [
            "",
            "bad!",
            "a b",
            "#ephemeral",
            "a#ephemeral#ephemeral",
            "a#eph",
            "é",
            "a\n",
            &long,
            &long_eph,
            "a#ephemeralx",
            "a/b",
        ] {
            assert!(!is_valid_topic_name(n), "{n:?}");
            assert!(!is_valid_channel_name(n), "{n:?}");
        }
    }

    #[test]
    fn ephemeral() {
        assert!(is_ephemeral("c#ephemeral"));
        assert!(!is_ephemeral("c"));
        assert!(!is_ephemeral("c#ephemeralx"));
    }
}
