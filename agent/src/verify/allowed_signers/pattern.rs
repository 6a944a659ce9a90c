//! OpenSSH's pattern lists (`*`/`?` globs, `!` negation), as used for the
//! `namespaces="…"` option. Apart because it is pure string matching, with
//! its own worst-case cost to keep linear.

/// The longest sub-pattern OpenSSH's `match_pattern_list` handles: it copies
/// each one into a 1024-byte buffer, and a list with a longer one matches
/// nothing at all, whatever its other patterns say.
pub const MAX_SUBPATTERN_LEN: usize = 1022;

/// OpenSSH's `match_pattern_list` (`match.c`), exactly: a comma-separated
/// list of `*`/`?` globs, where a `!`-negated match refuses outright,
/// otherwise any match accepts, and a sub-pattern longer than
/// [`MAX_SUBPATTERN_LEN`] refuses. As in OpenSSH, a trailing comma adds no
/// empty pattern, and an empty list matches nothing.
pub fn match_pattern_list(value: &str, patterns: &str) -> bool {
    let list = patterns.as_bytes();
    let mut matched = false;
    let mut i = 0;
    while i < list.len() {
        let negated = list[i] == b'!';
        if negated {
            i += 1;
        }
        let end = list[i..]
            .iter()
            .position(|&b| b == b',')
            .map_or(list.len(), |p| i + p);
        let sub = &list[i..end];
        if sub.len() > MAX_SUBPATTERN_LEN {
            return false;
        }
        i = (end + 1).min(list.len());
        if glob(value.as_bytes(), sub) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// Checks that ssh-keygen can match with `list` at all: no sub-pattern
/// longer than [`MAX_SUBPATTERN_LEN`] (a list with one never matches).
pub(super) fn check_pattern_list(list: &str, what: &str) -> Result<(), String> {
    let too_long = list
        .split(',')
        .any(|p| p.strip_prefix('!').unwrap_or(p).len() > MAX_SUBPATTERN_LEN);
    if too_long {
        return Err(format!(
            "a {what} pattern is longer than {MAX_SUBPATTERN_LEN} bytes, and ssh-keygen \
             never matches a list holding one; shorten it"
        ));
    }
    Ok(())
}

/// `*` and `?` wildcard matching in O(len(value) × len(pattern)): on a
/// mismatch only the last `*` is retried, one byte further (naive recursion
/// on every `*` is exponential in the number of stars).
fn glob(value: &[u8], pattern: &[u8]) -> bool {
    let (mut v, mut p) = (0, 0);
    let mut retry: Option<(usize, usize)> = None;
    while v < value.len() {
        match pattern.get(p) {
            Some(b'*') => {
                retry = Some((p, v));
                p += 1;
            }
            Some(&c) if c == b'?' || c == value[v] => {
                v += 1;
                p += 1;
            }
            _ => match retry {
                Some((star, from)) => {
                    p = star + 1;
                    v = from + 1;
                    retry = Some((star, from + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_lists_follow_openssh() {
        assert!(match_pattern_list("git", "git"));
        assert!(match_pattern_list("git", "file,g?t"));
        assert!(match_pattern_list("git", "*"));
        assert!(!match_pattern_list("git", "file"));
        assert!(!match_pattern_list("git", "*,!git"));
        assert!(!match_pattern_list("git", "gi"));
        assert!(
            match_pattern_list("git", "*t")
                && match_pattern_list("git", "g*")
                && match_pattern_list("git", "*i*")
        );
        assert!(!match_pattern_list("git", "*x*") && !match_pattern_list("git", "g?"));
        assert!(match_pattern_list("", "*") && !match_pattern_list("", "?"));
        // OpenSSH's edges: a trailing comma adds no empty pattern, an empty
        // list matches nothing, and a sub-pattern over 1022 bytes refuses
        // the whole list, even after a positive match.
        assert!(match_pattern_list("", ",") && !match_pattern_list("", "git,"));
        assert!(!match_pattern_list("", ""));
        assert!(match_pattern_list("git", "git,") && match_pattern_list("git", "!x,git"));
        let long = "x".repeat(MAX_SUBPATTERN_LEN);
        assert!(match_pattern_list("git", &format!("git,{long}")));
        assert!(!match_pattern_list("git", &format!("git,{long}x")));
        assert!(!match_pattern_list("git", &format!("git,!{long}x")));
        assert!(check_pattern_list(&format!("git,!{long}"), "namespace").is_ok());
        assert!(check_pattern_list(&format!("git,{long}x"), "namespace").is_err());
        // Thousands of stars cost microseconds, not minutes (found by fuzzing).
        let stars = format!("{}x", "*".repeat(5000));
        let started = std::time::Instant::now();
        assert!(!match_pattern_list("git", &stars));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
}
