//! OpenSSH's pattern lists (`*`/`?` globs, `!` negation), as used for the
//! `namespaces="…"` option. Apart because it is pure string matching, with
//! its own worst-case cost to keep linear.

/// OpenSSH's `match_pattern_list`: a comma-separated list of `*`/`?` globs,
/// where a `!`-negated match refuses outright and otherwise any match accepts.
pub fn match_pattern_list(value: &str, patterns: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        match pattern.strip_prefix('!') {
            Some(negated) if glob(value.as_bytes(), negated.as_bytes()) => return false,
            Some(_) => {}
            None => matched |= glob(value.as_bytes(), pattern.as_bytes()),
        }
    }
    matched
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
