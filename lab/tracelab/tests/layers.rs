//! The floor plan of the `tracelab` crate, checked: imports between its
//! files form no circle, and the top-level layers only import downwards.
//!
//! Every `crate::…` and `super::…` path in a file (outside its
//! `#[cfg(test)]` module) is an edge from that file to the file of the
//! deepest module the path names. `mod` and `pub use` lines of a `mod.rs` or
//! `lib.rs` are its facade, not a dependency, and are skipped; a file that
//! imports an item through its parent's re-export therefore depends on the
//! parent file, which is what we want to see.
//!
//! Run alone with `cargo test -p tracelab --test layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod common;
use common::rust_files;

/// The top-level modules from the edge down. A module may import only from
/// modules listed after it.
const LAYERS: &[&str] = &[
    "cli",
    "console",
    "exercise",
    "scenario",
    "bench",
    "load",
    "supervisor",
    "fault",
    "dlq",
    "format",
];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// `load::generator` for `src/load/generator.rs`, `load` for
/// `src/load/mod.rs`, `` (the crate root) for `src/lib.rs`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The paths (`a::b::c`) written after `crate::` or `super::` in `code`,
/// with `super` resolved against `module`. Grouped imports
/// (`crate::a::{b, c::d}`) give one path per member.
fn referenced_paths(module: &str, is_facade: bool, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in code.lines() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        if is_facade
            && (t.starts_with("pub use ") || t.starts_with("mod ") || t.starts_with("pub mod "))
        {
            continue;
        }
        for start in ["crate::", "super::"] {
            let mut from = 0;
            while let Some(at) = line[from..].find(start) {
                let begin = from + at;
                from = begin + start.len();
                // `tracelab_client::…` is not ours, and the second `super`
                // of `super::super::` belongs to the first.
                let before = &line[..begin];
                if before.ends_with("::")
                    || before
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
                {
                    continue;
                }
                let base: Vec<&str> = if start == "crate::" {
                    Vec::new()
                } else {
                    let mut parts: Vec<&str> =
                        module.split("::").filter(|p| !p.is_empty()).collect();
                    parts.pop();
                    parts
                };
                for tail in expand(&line[from..]) {
                    let mut path: Vec<&str> = base.clone();
                    let mut rest = tail.as_str();
                    // `super::super::x`
                    while let Some(r) = rest.strip_prefix("super::") {
                        path.pop();
                        rest = r;
                    }
                    path.extend(rest.split("::").filter(|p| !p.is_empty()));
                    out.push(path.join("::"));
                }
            }
        }
    }
    out
}

/// `a::b::{c, d::e}; …` → `["a::b::c", "a::b::d::e"]`; `a::b(…)` → `["a::b"]`.
fn expand(text: &str) -> Vec<String> {
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    let head: String = text.chars().take_while(|c| ident(*c)).collect();
    let after = &text[head.len()..];
    if let Some(group) = after.strip_prefix('{') {
        let mut depth = 1;
        let mut end = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = i;
                break;
            }
        }
        let inner = &group[..end];
        let mut members = Vec::new();
        let mut depth = 0;
        let mut current = String::new();
        for c in inner.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    members.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        members.push(current);
        members
            .into_iter()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .flat_map(|m| {
                let m = if m == "self" { String::new() } else { m };
                expand(&m)
                    .into_iter()
                    .map(|e| format!("{head}{e}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    } else {
        vec![head.trim_end_matches(':').to_string()]
    }
}

/// The deepest known module that `path` starts with.
fn owner<'a>(path: &str, modules: &'a BTreeSet<String>) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find_map(|p| modules.get(&p))
}

fn graph_of(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let module = module_of(src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let name = file.file_name().unwrap();
        let is_facade = name == "mod.rs" || name == "lib.rs";
        let edges = graph.entry(module.clone()).or_default();
        for path in referenced_paths(&module, is_facade, code) {
            if let Some(target) = owner(&path, &modules)
                && *target != module
                && !target.is_empty()
            {
                edges.insert(target.clone());
            }
        }
    }
    graph
}

/// Every circle in the graph, each as the list of modules on it.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    // Tarjan's strongly connected components; a component of two or more
    // modules is a circle.
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// Imports between top-level modules that point up (or sideways to a
/// module that is not listed below).
fn upward_imports(graph: &Graph) -> Vec<String> {
    let rank = |m: &str| {
        let top = m.split("::").next().unwrap_or("");
        LAYERS.iter().position(|l| *l == top)
    };
    let mut out = Vec::new();
    for (from, targets) in graph {
        for to in targets {
            let (Some(a), Some(b)) = (rank(from), rank(to)) else {
                continue;
            };
            if a > b {
                out.push(format!("{from} -> {to}"));
            }
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_top_level_module_is_a_listed_layer() {
    let graph = graph_of(&src());
    let tops: BTreeSet<&str> = graph
        .keys()
        .filter_map(|m| m.split("::").next())
        .filter(|m| !m.is_empty())
        .collect();
    let listed: BTreeSet<&str> = LAYERS.iter().copied().collect();
    assert_eq!(
        tops, listed,
        "update LAYERS when a layer is added or removed"
    );
}

#[test]
fn no_import_circle_between_files() {
    let found = cycles(&graph_of(&src()));
    assert!(found.is_empty(), "import circles: {found:#?}");
}

#[test]
fn layers_import_only_downwards() {
    let up = upward_imports(&graph_of(&src()));
    assert!(
        up.is_empty(),
        "imports against the layer order {LAYERS:?}: {up:#?}"
    );
}

/// The files outside `cli/` (and `main.rs`) whose non-test code contains
/// any of `needles`.
fn outside_cli_using(src: &Path, needles: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let module = module_of(src, &file);
        if module == "cli"
            || module.starts_with("cli::")
            || module.is_empty() && file.ends_with("main.rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        if needles.iter().any(|n| code.contains(n)) {
            found.push(file.display().to_string());
        }
    }
    found
}

#[test]
fn only_the_cli_knows_clap_and_prints() {
    let src = src();
    assert_eq!(outside_cli_using(&src, &["clap"]), Vec::<String>::new());
    // The two sinks a caller points somewhere (the children's log lines, the
    // load generator's progress line) write; nothing else below cli/ does.
    let printing = outside_cli_using(&src, &["println!", "eprintln!", "print!(", "eprint!("]);
    assert_eq!(printing, Vec::<String>::new());
}

#[test]
fn the_checker_sees_circles_and_upward_imports() {
    // A throwaway crate tree: load ↔ cli through a grouped and a `super` path.
    let dir = std::env::temp_dir().join(format!("tracelab-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("cli")).unwrap();
    std::fs::create_dir_all(dir.join("load")).unwrap();
    std::fs::write(dir.join("lib.rs"), "pub mod cli;\npub mod load;\n").unwrap();
    std::fs::write(dir.join("cli/mod.rs"), "pub mod args;\npub use args::X;\n").unwrap();
    std::fs::write(dir.join("cli/args.rs"), "use crate::load::{self, run};\n").unwrap();
    std::fs::write(
        dir.join("load/mod.rs"),
        "pub mod run;\nfn f() { let _ = crate::cli::args::X; }\n",
    )
    .unwrap();
    std::fs::write(dir.join("load/run.rs"), "use super::super::cli::X;\n").unwrap();
    let graph = graph_of(&dir);
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(
        graph["cli::args"],
        BTreeSet::from(["load".to_string(), "load::run".to_string()])
    );
    assert_eq!(graph["load::run"], BTreeSet::from(["cli".to_string()]));
    let found = cycles(&graph);
    assert_eq!(
        found,
        vec![vec!["cli::args".to_string(), "load".to_string()]]
    );
    assert_eq!(
        upward_imports(&graph),
        vec!["load -> cli::args", "load::run -> cli"]
    );
}
