//! The shape of the crate, checked: the top-level modules of `src/` form layers, every `crate::`
//! path points to the same layer or a lower one, and the graph has no cycle; no function is longer
//! than [`MAX_FUNCTION_LINES`]. docs/ARCHITECTURE.md draws the same layers. Run it alone with
//! `cargo test --test it architecture`.
//!
//! The graph is read from the source text (every `crate::name` and every `use crate::{a, b}`
//! outside comments), the way a reader follows the imports; a new top-level module must be given
//! a layer here, which is the point: where it sits is a decision.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use modules of its own layer or below, never above.
const LAYERS: &[&[&str]] = &[
    // Plain data and helpers every part uses.
    &[
        "error", "progress", "rng", "dtype", "checksum", "source", "parallel",
    ],
    // Arithmetic and file formats, knowing nothing of lowbit's pipeline.
    &[
        "entropy",
        "linalg",
        "rotation",
        "kmeans",
        "svg",
        "alloc",
        "shaders",
        "io",
        "demo",
        "distortion",
    ],
    // Where the heavy kernels run (CPU reference and WGSL).
    &["backend"],
    // The methods: one section of one tensor, and back; the model runtime (runs a model from any
    // source of weights, to judge it downstream).
    &["codec", "model"],
    // The `.lowbit` container, and an input seen as a list of tensors.
    &["container"],
    &["checkpoint"],
    // The two pipelines: sequence files, and checkpoints / vector datasets.
    &["sequence"],
    &["pipeline", "teach"],
    // The report of a plan.
    &["report"],
    // The front door, and the browser bindings on top of it.
    &["api"],
    &["wasm"],
];

/// The longest function the crate allows (lines from `fn` to its closing brace).
const MAX_FUNCTION_LINES: usize = 120;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and without the contents of string and char literals (so that
/// `"http://"` or a `{` in a message is not read as code).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    if b[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                out.push('"');
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    if b.get(i) == Some(&b'\n') {
                        out.push('\n');
                    }
                    i += 1;
                }
                out.push('"');
                i += 1;
            }
            // A char literal ('x', '\n', '{'), not a lifetime ('a).
            b'\'' if b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\') => {
                out.push_str("' '");
                i += if b[i + 1] == b'\\' { 4 } else { 3 };
                while i < b.len() && b[i - 1] != b'\'' {
                    i += 1;
                }
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

/// The top-level module a file of `src/` belongs to (`None` for the binary's `main.rs` and the
/// crate root, which only declare and re-export).
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).expect("under src/");
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "main" && name != "lib").then_some(name)
}

fn identifier_at(code: &str, start: usize) -> &str {
    let end = code[start..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(code.len(), |n| start + n);
    &code[start..end]
}

/// Module -> the other top-level modules it names, each with the files that name it.
fn module_graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for path in files {
        let Some(module) = module_of(&path) else {
            continue;
        };
        let code = code_only(&std::fs::read_to_string(&path).expect("readable"));
        let mut targets = BTreeSet::new();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    let item = item.trim();
                    targets.insert(identifier_at(item, 0).to_string());
                }
            } else {
                targets.insert(identifier_at(rest, 0).to_string());
            }
        }
        let file = path.strip_prefix(src()).unwrap().display().to_string();
        let edges = graph.entry(module.clone()).or_default();
        for target in targets {
            if !target.is_empty() && target != module && target != "self" {
                edges.entry(target).or_default().insert(file.clone());
            }
        }
    }
    graph
}

/// Whether `name` is a top-level module of `src/` (a file or a folder).
fn is_module(name: &str) -> bool {
    src().join(format!("{name}.rs")).is_file() || src().join(name).is_dir()
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

#[test]
fn every_module_uses_only_its_own_layer_or_lower_ones() {
    let graph = module_graph();
    let mut problems = Vec::new();
    for (module, edges) in &graph {
        let Some(own) = layer_of(module) else {
            problems.push(format!(
                "src/{module} has no layer: place it in LAYERS (tests/it/architecture.rs) and in docs/ARCHITECTURE.md"
            ));
            continue;
        };
        for (target, files) in edges {
            match layer_of(target) {
                Some(layer) if layer <= own => {}
                Some(_) => problems.push(format!(
                    "{module} (layer {own}) uses {target}, a higher layer, in {files:?}"
                )),
                None if is_module(target) => {
                    problems.push(format!("{module} uses {target}, which has no layer"))
                }
                // A name re-exported by the crate root hides which module it comes from.
                None => problems.push(format!(
                    "{module} uses crate::{target} (a re-export of the crate root) in {files:?}: \
                     name the module it comes from"
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = module_graph();
    // Depth-first search; a back edge closes a cycle.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        state: &mut BTreeMap<&'a str, bool>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(true) => return None,
            Some(false) => {
                let from = path.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle: Vec<String> = path[from..].iter().map(|s| s.to_string()).collect();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        state.insert(node, false);
        path.push(node);
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(cycle) = visit(next, graph, state, path) {
                return Some(cycle);
            }
        }
        path.pop();
        state.insert(node, true);
        None
    }
    let mut state = BTreeMap::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut state, &mut Vec::new()) {
            let files: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} -> {}: {:?}", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            panic!("a cycle: {}\n{}", cycle.join(" -> "), files.join("\n"));
        }
    }
}

/// Every `fn` of `src/` with its length in lines (signature to closing brace).
fn function_lengths() -> Vec<(usize, String)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut out = Vec::new();
    for path in files {
        let code = code_only(&std::fs::read_to_string(&path).expect("readable"));
        let lines: Vec<&str> = code.lines().collect();
        for (start, line) in lines.iter().enumerate() {
            let Some(at) = line.find("fn ") else { continue };
            let before = line[..at].trim();
            let is_fn = before.split_whitespace().all(|w| {
                [
                    "pub",
                    "pub(crate)",
                    "pub(super)",
                    "async",
                    "const",
                    "unsafe",
                ]
                .contains(&w)
            });
            if !is_fn || !line[at + 3..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            {
                continue;
            }
            let (mut depth, mut opened) = (0i64, false);
            for (end, body) in lines.iter().enumerate().skip(start) {
                if !opened && depth == 0 && body.contains(';') && !body.contains('{') {
                    break; // a declaration without a body (trait method)
                }
                for c in body.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if opened && depth <= 0 {
                    let name = identifier_at(&line[at + 3..], 0);
                    let rel = path.strip_prefix(src()).unwrap().display();
                    out.push((end - start + 1, format!("src/{rel}: fn {name}")));
                    break;
                }
            }
        }
    }
    out
}

#[test]
fn no_function_is_longer_than_the_limit() {
    let long: Vec<String> = function_lengths()
        .into_iter()
        .filter(|(n, _)| *n > MAX_FUNCTION_LINES)
        .map(|(n, f)| format!("{f}: {n} lines"))
        .collect();
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them by what they do):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_check() {
    // The reader finds the edges and functions it is meant to: a test that read nothing would
    // pass for any crate.
    let graph = module_graph();
    assert!(graph["pipeline"].contains_key("codec"));
    assert!(graph["api"].contains_key("pipeline"));
    let lengths = function_lengths();
    assert!(lengths.len() > 500, "{} functions found", lengths.len());
    assert!(lengths
        .iter()
        .any(|(_, f)| f.ends_with("fn compress_input")));
}
