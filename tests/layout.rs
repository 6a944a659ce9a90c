//! The layout is the pipeline (see `agent/src/lib.rs` and docs/design.md):
//! these tests read the library's source and fail when a change breaks the
//! rules the tree keeps, so a newcomer can trust what the folders say.
//!
//! - a stage imports only the stages before it (lower layers);
//! - nothing outside `cli/` names `crate::cli`;
//! - no two files import each other, directly or around a loop;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

/// Each source file's module path (`source::poll`) and its text.
fn modules() -> BTreeMap<String, String> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(src()).expect("under src").with_extension("");
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
            Some((parts.join("::"), text))
        })
        .collect()
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

/// Every `crate::a::b::c` path named in `code`, as its segments.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let preceded_by_ident = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[i + "crate::".len()..];
        if preceded_by_ident {
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        out.push(
            rest[..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        );
    }
    out
}

fn layer_of(module: &str) -> usize {
    let top = module.split("::").next().unwrap_or_default();
    LAYERS
        .iter()
        .position(|layer| layer.contains(&top))
        .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS and lib.rs's map"))
}

/// Module → the other modules it imports.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let names: BTreeSet<&String> = modules.keys().collect();
    modules
        .iter()
        .map(|(module, text)| {
            let mut deps = BTreeSet::new();
            for path in crate_paths(&code_of(text)) {
                // The longest prefix that names a module.
                let target = (1..=path.len())
                    .rev()
                    .map(|k| path[..k].join("::"))
                    .find(|p| names.contains(p));
                if let Some(target) = target {
                    let own_part = module.starts_with(&format!("{target}::"));
                    if target != *module && !own_part {
                        deps.insert(target);
                    }
                }
            }
            (module.clone(), deps)
        })
        .collect()
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
    assert!(wrong.is_empty(), "imports that run backwards:\n{}", wrong.join("\n"));
}

#[test]
fn nothing_outside_cli_names_cli() {
    let offenders: Vec<String> = modules()
        .into_iter()
        .filter(|(module, text)| {
            module.split("::").next() != Some("cli")
                && crate_paths(&code_of(text)).iter().any(|p| p[0] == "cli")
        })
        .map(|(module, _)| module)
        .collect();
    assert!(offenders.is_empty(), "library modules that name crate::cli: {offenders:?}");
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
        assert!(cycle.is_none(), "an import loop: {}", cycle.unwrap_or_default().join(" -> "));
    }
}

#[test]
fn the_checks_see_what_they_check() {
    // The parser finds real imports, so a passing check means something.
    let graph = imports();
    assert!(graph["node::apply"].contains("record::state"), "{:?}", graph["node::apply"]);
    assert!(graph["fleet::watch"].iter().any(|d| d.starts_with("source::")));
    assert_eq!(
        crate_paths("use crate::a::b; my_crate::no; // crate::c"),
        [vec!["a".to_owned(), "b".to_owned()], vec!["c".to_owned()]]
    );
    assert_eq!(code_of("a // crate::x\n#[cfg(test)]\nuse crate::y;"), "a ");
    // lib.rs's map names every folder and top-level module it declares.
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    for layer in LAYERS {
        for module in *layer {
            assert!(lib.contains(&format!("pub mod {module};")), "lib.rs declares {module}");
            assert!(lib.contains(&format!("[`{module}`]")), "lib.rs's map names {module}");
        }
    }
}
