//! Every arrow between stint's top-level modules points down: no module
//! reaches, directly or through others, back into a module that depends on
//! it. Import circles hide the layers (identity → policy → provider → audit,
//! with small helpers such as `clock` at the bottom), so a new one fails here
//! with the files that close it.
//!
//! CLI verb groups (`commands.rs`) and unit tests sit on top by nature and
//! are left out, as are `main.rs` and `lib.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `from` → `to` → the files (relative to src/) that make the edge.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its trailing unit tests.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    for path in files {
        let rel = path.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        let name = path.file_name().unwrap().to_string_lossy();
        if matches!(rel.as_str(), "main.rs" | "lib.rs") || name == "commands.rs" || name == "tests.rs" {
            continue;
        }
        let from = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
        let text = code(&std::fs::read_to_string(&path).unwrap());
        for (i, _) in text.match_indices("crate::") {
            let to: String = text[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !to.is_empty() && to != from {
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(rel.clone());
            }
        }
    }
    graph
}

/// A path from `from` back to `to`, if there is one.
fn path_between(graph: &Graph, from: &str, to: &str) -> Option<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![from.to_string()]];
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap().clone();
        if last == to && path.len() > 1 {
            return Some(path);
        }
        if !seen.insert(last.clone()) {
            continue;
        }
        for next in graph.get(&last).into_iter().flat_map(|m| m.keys()) {
            let mut longer = path.clone();
            longer.push(next.clone());
            stack.push(longer);
        }
    }
    None
}

#[test]
fn every_arrow_between_modules_points_down() {
    let graph = graph();
    assert!(
        graph.contains_key("broker"),
        "the scan found stint's modules: {graph:?}"
    );
    let mut circles = Vec::new();
    for (from, edges) in &graph {
        for to in edges.keys() {
            if let Some(back) = path_between(&graph, to, from) {
                let files: Vec<String> = std::iter::once(from)
                    .chain(back.iter())
                    .collect::<Vec<_>>()
                    .windows(2)
                    .map(|w| format!("{} → {} ({:?})", w[0], w[1], graph[w[0]][w[1].as_str()]))
                    .collect();
                circles.push(files.join(", "));
            }
        }
    }
    assert!(circles.is_empty(), "import circles:\n{}", circles.join("\n"));
}

#[test]
fn the_bottom_helpers_depend_on_nothing_of_stints() {
    let graph = graph();
    for bottom in ["clock", "duration", "redact"] {
        assert!(
            !graph.contains_key(bottom),
            "{bottom} must stay at the bottom, but it uses {:?}",
            graph.get(bottom)
        );
    }
}
