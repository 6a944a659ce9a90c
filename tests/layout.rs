//! The layout is the pipeline (see `agent/src/lib.rs` and docs/design.md):
//! these tests read the library's source and fail when a change breaks the
//! rules the tree keeps, so a newcomer can trust what the folders say.
//!
//! - a stage imports only the stages before it (lower layers);
//! - nothing outside `cli/` names `crate::cli`;
//! - no two files import each other, directly or around a loop;
//! - no source file is over [`MAX_LINES`] lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The most lines a file under `agent/src/` may have, unit tests included.
const MAX_LINES: usize = 600;

/// The layers, lowest first: each may import only the layers before it
/// (and itself). Modules on one line share a layer but do not import each
/// other.
const LAYERS: &[&[&str]] = &[
    &["types", "error", "events"],
    &["root"],
    &["verify"],
    &["config"],
    &["source"],
    &["release"],
    &["record"],
    &["node"],
    &["fleet"],
    &["exit"],
    &["cli"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read agent/src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// One source file: its module path (`source::poll`), its text, and the
/// unit it belongs to (see [`unit_of`]).
struct Module {
    text: String,
    /// Child modules this file declares, and whether each is public.
    children: Vec<(String, bool)>,
}

/// Each source file by module path.
fn modules() -> BTreeMap<String, Module> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path
                .strip_prefix(src())
                .expect("under src")
                .with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                return None;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            let children = code_of(&text)
                .lines()
                .filter_map(|line| {
                    let line = line.trim();
                    let public = line.starts_with("pub");
                    let rest = line.strip_prefix("mod ").or_else(|| {
                        line.strip_prefix("pub mod ")
                            .or_else(|| line.strip_prefix("pub(crate) mod "))
                    })?;
                    let name = rest.strip_suffix(';')?;
                    Some((name.to_owned(), public))
                })
                .collect();
            Some((parts.join("::"), Module { text, children }))
        })
        .collect()
}

/// The unit a module belongs to: a file's private child modules (`mod
/// part;`) are parts of it (an `impl` spread over files, say), so they
/// count as the module that declares them; public ones are units of their
/// own.
fn unit_of(module: &str, modules: &BTreeMap<String, Module>) -> String {
    let mut current = module.to_owned();
    while let Some((parent, name)) = current.rsplit_once("::") {
        let private = modules.get(parent).is_some_and(|m| {
            m.children
                .iter()
                .any(|(child, public)| child == name && !public)
        });
        if !private {
            break;
        }
        current = parent.to_owned();
    }
    current
}
/// The code of a file without comments and without its unit tests (which
/// may use anything).
fn code_of(text: &str) -> String {
    let before_tests = text.split("#[cfg(test)]").next().unwrap_or_default();
    before_tests
        .lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path named in `code` that starts with `crate::`, `super::`,
/// `self::` or one of `children`, made absolute for a file whose module
/// is `module`.
fn named_paths(code: &str, module: &str, children: &[(String, bool)]) -> Vec<Vec<String>> {
    let own: Vec<String> = module.split("::").map(str::to_owned).collect();
    let mut out = Vec::new();
    for (start, _) in code.match_indices(|c: char| c.is_alphabetic()) {
        let preceded = code[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        if preceded {
            continue;
        }
        let rest = &code[start..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let segments: Vec<String> = rest[..end]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if segments.len() < 2 {
            continue;
        }
        let mut base = match segments[0].as_str() {
            "crate" => Vec::new(),
            "self" => own.clone(),
            "super" => own[..own.len().saturating_sub(1)].to_vec(),
            name if children.iter().any(|(c, _)| c == name) => own.clone(),
            _ => continue,
        };
        let skip = usize::from(matches!(segments[0].as_str(), "crate" | "self" | "super"));
        let mut tail = segments[skip..].iter();
        for s in tail.by_ref() {
            if s == "super" {
                base.pop();
            } else {
                base.push(s.clone());
                break;
            }
        }
        base.extend(tail.cloned());
        out.push(base);
    }
    out
}

/// Every `crate::a::b::c` path named in `code`, as its segments.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    named_paths(code, "", &[])
}

fn layer_of(module: &str) -> usize {
    let top = module.split("::").next().unwrap_or_default();
    LAYERS
        .iter()
        .position(|layer| layer.contains(&top))
        .unwrap_or_else(|| {
            panic!("module {module} is in no layer: add it to LAYERS and lib.rs's map")
        })
}

/// Unit → the other units it imports.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        let unit = unit_of(module, &modules);
        let deps = graph.entry(unit.clone()).or_default();
        for path in named_paths(&code_of(&file.text), module, &file.children) {
            // The longest prefix that names a module.
            let target = (1..=path.len())
                .rev()
                .map(|k| path[..k].join("::"))
                .find(|p| modules.contains_key(p));
            if let Some(target) = target {
                let target = unit_of(&target, &modules);
                // A module's own folder declares it: naming the parent's
                // items from inside is the parent reaching down, not a loop.
                let inside = unit.starts_with(&format!("{target}::"));
                if target != unit && !inside {
                    deps.insert(target);
                }
            }
        }
    }
    graph
}

#[test]
fn every_stage_imports_only_the_stages_before_it() {
    let mut wrong = Vec::new();
    for (module, deps) in imports() {
        for dep in deps {
            let same_top = module.split("::").next() == dep.split("::").next();
            if !same_top && layer_of(&dep) >= layer_of(&module) {
                wrong.push(format!("{module} imports {dep}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that run backwards:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn nothing_outside_cli_names_cli() {
    let offenders: Vec<String> = modules()
        .into_iter()
        .filter(|(module, file)| {
            module.split("::").next() != Some("cli")
                && crate_paths(&code_of(&file.text))
                    .iter()
                    .any(|p| p[0] == "cli")
        })
        .map(|(module, _)| module)
        .collect();
    assert!(
        offenders.is_empty(),
        "library modules that name crate::cli: {offenders:?}"
    );
}

#[test]
fn no_two_files_import_each_other() {
    let graph = imports();
    // Depth-first search for a back edge, reporting the loop it closes.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for dep in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(dep, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        let cycle = visit(module, &graph, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "an import loop: {}",
            cycle.unwrap_or_default().join(" -> ")
        );
    }
}

#[test]
fn no_source_file_is_over_the_limit() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path).expect("read").lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", path.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines; split by responsibility: {long:?}"
    );
}

#[test]
fn the_checks_see_what_they_check() {
    // The parser finds real imports, so a passing check means something.
    let graph = imports();
    assert!(
        graph["node::apply"].contains("record::state"),
        "{:?}",
        graph["node::apply"]
    );
    assert!(
        graph["fleet::watch"]
            .iter()
            .any(|d| d.starts_with("source::"))
    );
    assert_eq!(
        crate_paths("use crate::a::b; my_crate::no; // crate::c"),
        [vec!["a".to_owned(), "b".to_owned()], vec!["c".to_owned()]]
    );
    let children = [("part".to_owned(), false)];
    assert_eq!(
        named_paths(
            "use super::x::Y; part::z(); self::w; other::v",
            "a::b",
            &children
        ),
        [
            vec!["a", "x", "Y"],
            vec!["a", "b", "part", "z"],
            vec!["a", "b", "w"]
        ]
    );
    // Private parts of a file count as the file.
    assert_eq!(unit_of("fleet::watch::decide", &modules()), "fleet::watch");
    assert_eq!(unit_of("source::fetch", &modules()), "source::fetch");
    assert_eq!(code_of("a // crate::x\n#[cfg(test)]\nuse crate::y;"), "a ");
    // lib.rs's map names every folder and top-level module it declares.
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    for layer in LAYERS {
        for module in *layer {
            assert!(
                lib.contains(&format!("pub mod {module};")),
                "lib.rs declares {module}"
            );
            assert!(
                lib.contains(&format!("[`{module}`]")),
                "lib.rs's map names {module}"
            );
        }
    }
}
