//! Writes the `driftless(1)` man page, in roff, from the command line's own
//! definition (`driftless::cli::Cli`), so the page always matches the
//! binary: every subcommand, option, value name and default. The exit
//! statuses and the node's files come from the tables in the README and in
//! docs/operations.md, so they too are written down once.
//!
//! ```sh
//! cargo run --example manpage -- target/release/driftless.1
//! man -l target/release/driftless.1
//! ```
//!
//! `packaging/build-deb.sh` runs it before `cargo deb`. Without an argument
//! the page goes to standard output.

use std::fmt::Write as _;

use clap::{Arg, ArgAction, Command, CommandFactory as _};

const README: &str = include_str!("../../README.md");
const OPERATIONS: &str = include_str!("../../docs/operations.md");

fn main() -> Result<(), String> {
    let mut cli = driftless::cli::Cli::command();
    // Finishes the definition (value counts, defaults) as parsing would.
    cli.build();
    let page = render(&cli)?;
    match std::env::args_os().nth(1) {
        Some(path) => std::fs::write(&path, page)
            .map_err(|e| format!("cannot write {}: {e}", path.to_string_lossy())),
        None => {
            print!("{page}");
            Ok(())
        }
    }
}

/// The whole page.
fn render(cli: &Command) -> Result<String, String> {
    let name = cli.get_name();
    let version = cli.get_version().unwrap_or("");
    let about = cli.get_about().map(|s| s.to_string()).unwrap_or_default();
    let mut page = String::new();
    // No date: the page is the same for the same source (reproducible builds).
    let _ = writeln!(
        page,
        ".TH {} 1 \"\" \"{name} {version}\" \"User Commands\"",
        name.to_uppercase()
    );
    page.push_str(".SH NAME\n");
    let _ = writeln!(page, "{name} \\- {}", escape(&sentence(&about)));
    page.push_str(".SH SYNOPSIS\n");
    for (full, sub) in visible_subcommands(cli) {
        let _ = writeln!(page, ".br\n{}", synopsis(name, &full, sub));
    }
    page.push_str(".SH DESCRIPTION\n");
    page.push_str(&intro(README)?);
    page.push_str(".SH COMMANDS\n");
    for (full, sub) in visible_subcommands(cli) {
        let _ = writeln!(page, ".SS \"{name} {full}\"");
        let text = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|s| s.to_string())
            .unwrap_or_default();
        let _ = writeln!(page, ".PP\n{}", inline(&full_stop(&one_paragraph(&text))));
        for arg in sub.get_arguments().filter(|a| shown(a)) {
            page.push_str(&option(arg));
        }
    }
    page.push_str(".SH EXIT STATUS\n");
    for row in table(README, "## Exit codes", 2)? {
        let _ = writeln!(
            page,
            ".TP\n.B {}\n{}",
            escape(&row[0]),
            inline(&full_stop(&capitalized(&row[1])))
        );
    }
    page.push_str(".SH ENVIRONMENT\n");
    page.push_str(
        ".TP\n.B DRIFTLESS_LOG\nThe log level: \\fBinfo\\fR by default; e.g. \\fBdebug\\fR, or \
         \\fBdriftless=debug,warn\\fR. Logs go to standard error, one line per event.\n",
    );
    page.push_str(".SH FILES\n");
    for row in table(OPERATIONS, "## Files on the node", 3)? {
        let locked = if row[2].trim() == "yes" {
            " Locked once applied."
        } else {
            ""
        };
        let _ = writeln!(
            page,
            ".TP\n{}\n{}{locked}",
            inline(&row[0]),
            inline(&full_stop(&capitalized(&row[1])))
        );
    }
    page.push_str(
        ".TP\n.I /lib/systemd/system/driftless-apply.service\nRuns \\fBdriftless apply\\fR at \
         boot, once cloud-init has written the config.\n\
         .TP\n.I /lib/systemd/system/driftless-watch.service\nRuns \\fBdriftless watch\\fR.\n\
         .TP\n.I /lib/systemd/system/driftless-failed.service\nPrints \\fBdriftless status\\fR \
         to the console when apply fails.\n",
    );
    page.push_str(".SH SEE ALSO\n");
    page.push_str(
        ".BR systemctl (1),\n.BR cloud-init (1),\n.BR ssh-keygen (1),\n.BR git-tag (1)\n.PP\n\
         /usr/share/doc/driftless/README.md\n",
    );
    Ok(page)
}

/// Every command a user runs, with its full name (`config check` for a
/// subcommand's own subcommands), without hidden ones and clap's `help`.
fn visible_subcommands(cli: &Command) -> Vec<(String, &Command)> {
    let mut out = Vec::new();
    for sub in cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let nested = visible_subcommands(sub);
        if nested.is_empty() {
            out.push((sub.get_name().to_owned(), sub));
        } else {
            out.extend(
                nested
                    .into_iter()
                    .map(|(name, c)| (format!("{} {name}", sub.get_name()), c)),
            );
        }
    }
    out
}

/// Options shown in the page: not hidden, and not clap's own help/version.
fn shown(arg: &Arg) -> bool {
    !arg.is_hide_set()
        && !matches!(
            arg.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        )
}

/// One synopsis line: `driftless apply [--root DIR] [--no-lock]`.
fn synopsis(name: &str, full: &str, sub: &Command) -> String {
    let mut line = format!("\\fB{name} {}\\fR", escape(full));
    for arg in sub.get_arguments().filter(|a| shown(a)) {
        let mut word = String::new();
        match arg.get_long() {
            Some(long) => {
                let _ = write!(word, "\\fB\\-\\-{}\\fR", escape(long));
                if takes_value(arg) {
                    let _ = write!(word, " \\fI{}\\fR", value_name(arg));
                }
            }
            None => {
                let _ = write!(word, "\\fI{}\\fR", value_name(arg));
            }
        }
        if arg.is_required_set() {
            let _ = write!(line, " {word}");
        } else {
            let _ = write!(line, " [{word}]");
        }
    }
    line
}

/// An option's `.TP` entry: its flags, value, help and default.
fn option(arg: &Arg) -> String {
    let mut head = Vec::new();
    if let Some(short) = arg.get_short() {
        head.push(format!("\\fB\\-{short}\\fR"));
    }
    if let Some(long) = arg.get_long() {
        head.push(format!("\\fB\\-\\-{}\\fR", escape(long)));
    }
    let mut head = head.join(", ");
    if takes_value(arg) {
        if head.is_empty() {
            head = format!("\\fI{}\\fR", value_name(arg));
        } else {
            let _ = write!(head, " \\fI{}\\fR", value_name(arg));
        }
    }
    let mut help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|s| full_stop(&s.to_string()))
        .unwrap_or_default();
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && takes_value(arg) {
        let _ = write!(help, " Default: {}.", defaults.join(", "));
    }
    format!(".TP\n{head}\n{}\n", inline(&one_paragraph(&help)))
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.takes_values()) || arg.is_positional()
}

fn value_name(arg: &Arg) -> String {
    let name = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map(|n| n.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    escape(&name)
}

/// The about text without the `driftless: ` prefix the help shows.
fn sentence(about: &str) -> String {
    let text = about.trim();
    let text = text.strip_prefix("driftless:").unwrap_or(text).trim();
    text.trim_end_matches('.').to_owned()
}

/// The README's introduction (from its title to its first section) as
/// paragraphs and numbered lists.
fn intro(markdown: &str) -> Result<String, String> {
    let text: Vec<&str> = markdown
        .lines()
        .skip_while(|l| !l.starts_with("# "))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .collect();
    let mut out = String::new();
    for block in text.join("\n").split("\n\n").map(str::trim) {
        // "1. text" items, each possibly continued on indented lines.
        let mut items: Vec<(String, String)> = Vec::new();
        let mut plain = Vec::new();
        for line in block.lines() {
            let numbered = line
                .split_once(". ")
                .filter(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            match (numbered, items.last_mut()) {
                (Some((n, rest)), _) => items.push((format!("{n}."), rest.to_owned())),
                (None, Some((_, item))) if line.starts_with(' ') => {
                    item.push(' ');
                    item.push_str(line.trim());
                }
                _ => plain.push(line),
            }
        }
        if !plain.is_empty() {
            let _ = writeln!(out, ".PP\n{}", inline(&one_paragraph(&plain.join(" "))));
        }
        for (n, item) in items {
            let _ = writeln!(out, ".IP {n} 4\n{}", inline(&one_paragraph(&item)));
        }
    }
    if out.is_empty() {
        return Err("the README has no introduction".into());
    }
    Ok(out)
}

/// The text with a full stop at its end (clap drops a one-sentence help's).
fn full_stop(text: &str) -> String {
    let text = text.trim_end();
    if text.is_empty() || text.ends_with(['.', '!', '?', ':']) {
        text.to_owned()
    } else {
        format!("{text}.")
    }
}

/// The text with its first letter upper case.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// A paragraph as one line (roff fills it).
fn one_paragraph(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Escapes text for roff: backslashes and minus signs, and a leading dot
/// or quote that would start a request.
fn escape(text: &str) -> String {
    guard(escape_text(text))
}

/// Backslashes and minus signs escaped, and every character beyond ASCII
/// written as groff's `\\[uXXXX]`, which renders the same on any output
/// device (a raw `…` is invalid input to troff's default encoding).
fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c if c.is_ascii() => out.push(c),
            c => {
                let _ = write!(out, "\\[u{:04X}]", u32::from(c));
            }
        }
    }
    out
}

/// A line that would start with a request character made plain text.
fn guard(line: String) -> String {
    if line.starts_with(['.', '\'']) {
        format!("\\&{line}")
    } else {
        line
    }
}

/// Markdown inline text to roff: `code` and **strong** become bold,
/// [text](link) its text.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text.trim();
    while let Some(first) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("**") {
            if let Some(end) = after.find("**") {
                let _ = write!(out, "\\fB{}\\fR", escape_text(&after[..end]));
                rest = &after[end + 2..];
                continue;
            }
        }
        if first == '`' {
            if let Some(end) = rest[1..].find('`') {
                let _ = write!(out, "\\fB{}\\fR", escape_text(&rest[1..=end]));
                rest = &rest[end + 2..];
                continue;
            }
        }
        if first == '[' {
            if let Some((label, tail)) = rest[1..].split_once("](") {
                if let Some(close) = tail.find(')') {
                    out.push_str(&escape_text(label));
                    rest = &tail[close + 1..];
                    continue;
                }
            }
        }
        let skip = first.len_utf8();
        let next = rest[skip..]
            .find(['`', '[', '*'])
            .map_or(rest.len(), |i| i + skip);
        out.push_str(&escape_text(&rest[..next]));
        rest = &rest[next..];
    }
    guard(out)
}

/// The body rows of the first Markdown table after `heading`, each with
/// `columns` cells.
fn table(markdown: &str, heading: &str, columns: usize) -> Result<Vec<Vec<String>>, String> {
    let start = markdown
        .lines()
        .position(|l| l.trim() == heading)
        .ok_or_else(|| format!("no {heading:?} section"))?;
    let rows: Vec<Vec<String>> = markdown
        .lines()
        .skip(start + 1)
        .skip_while(|l| !l.trim_start().starts_with('|'))
        .take_while(|l| l.trim_start().starts_with('|'))
        .skip(2) // the header and the |---| line
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect();
    if rows.is_empty() || rows.iter().any(|r: &Vec<String>| r.len() != columns) {
        return Err(format!(
            "the table under {heading:?} is missing or has not {columns} columns"
        ));
    }
    Ok(rows)
}
