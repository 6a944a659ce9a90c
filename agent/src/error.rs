//! How errors are shown: one line a person can act on, for the terminal,
//! the journal and the records (`status`, `failure.json`, `watch.json`).

/// An error and its causes, joined on one line (`outer: inner: root`); a
/// cause that only repeats the end of the line so far is left out.
pub fn one_line(error: &anyhow::Error) -> String {
    join_causes(error.chain().map(ToString::to_string))
}

fn join_causes(causes: impl IntoIterator<Item = String>) -> String {
    let mut line = String::new();
    for text in causes {
        if !line.is_empty() {
            if line.ends_with(&text) {
                continue;
            }
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// `text` with control characters as spaces, trimmed, cut at `max` chars
/// (marked with `…`).
pub fn clip(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.trim();
    if clean.chars().count() <= max {
        return clean.to_owned();
    }
    let mut cut: String = clean.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn causes_are_joined_and_repeats_dropped() {
        let e = anyhow::Error::new(Inner)
            .context("outer")
            .context("top: outer");
        assert_eq!(one_line(&e), "top: outer: inner");
        let multi = anyhow::anyhow!("two\nlines");
        assert_eq!(one_line(&multi), "two lines");
        assert_eq!(clip(" a\tb\n", 10), "a b");
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
