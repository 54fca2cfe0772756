//! `cargo xtask lint`'s check that no two modules of a crate depend on each other.
//!
//! A cycle between two files means neither can be read, tested or moved without the other:
//! limiter-user once had four (`config` and `settings`, `metrics` and its per-destination part,
//! the status renderer and its parts, `dest` -> `kube` -> `model` -> `dest`). clippy has no such
//! lint, and cargo-modules would pull a rust-analyzer build into every CI run, so this reads the
//! `crate::`, `super::` and `self::` paths of each file (comments removed) and finds the
//! strongly connected components of the graph they make.
//!
//! What counts as an edge: any path in code or a `use` tree that names a module of the crate,
//! resolved to the longest module prefix; a parent's `mod child;` does not (declaring is not
//! using), its `pub use child::X` does. Test files (`*_tests.rs`, `tests.rs`, test utilities)
//! are left out: a test reaches into what it tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// Module path (`["rules", "spec"]`) to the file that holds it.
type Modules = BTreeMap<Vec<String>, PathBuf>;

fn is_test_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.ends_with("_tests.rs") || matches!(name, "tests.rs" | "testutil.rs" | "testing.rs")
}

/// Every module file under `src`, by its module path.
fn modules(src: &Path) -> Result<Modules> {
    let mut found = Modules::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || is_test_file(&path) {
                continue;
            }
            let rel = path.strip_prefix(src)?.with_extension("");
            let mut segments: Vec<String> = rel
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if matches!(
                segments.last().map(String::as_str),
                Some("mod" | "main" | "lib")
            ) {
                segments.pop();
            }
            found.insert(segments, path);
        }
    }
    Ok(found)
}

/// The code of a file without `//` comments (doc links name modules without using them) and
/// without its inline test module (`#[cfg(test)] mod tests { use super::*; ... }`, by habit the
/// end of a file), whose `super` is the file itself.
fn code_of(text: &str) -> String {
    let mut code = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let is_test_module = line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod ") && next.ends_with('{'));
        if is_test_module {
            break;
        }
        code.push(line.find("//").map_or(line, |at| &line[..at]));
    }
    code.join("\n")
}

/// `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn expand_use_tree(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let inner = tree[open + 1..]
        .strip_suffix('}')
        .unwrap_or(&tree[open + 1..]);
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(expand_use_tree)
        .map(|p| format!("{prefix}{p}"))
        .collect()
}

/// Every `crate::`/`super::`/`self::` path in `code`, `use` trees expanded.
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before_ok = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let Some(end) = rest[at..].find(';') else {
            break;
        };
        if before_ok {
            paths.extend(expand_use_tree(&rest[at + 4..at + end]));
        }
        rest = &rest[at + end..];
    }
    let is_path_char = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    for root in ["crate::", "super::", "self::"] {
        for (at, _) in code.match_indices(root) {
            let before_ok = code[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !is_path_char(c));
            if before_ok {
                let len = code[at..]
                    .find(|c| !is_path_char(c))
                    .unwrap_or(code.len() - at);
                paths.push(code[at..at + len].trim_end_matches(':').to_string());
            }
        }
    }
    paths
}

/// The module a path names from `module`, by its longest known prefix.
fn resolve(path: &str, module: &[String], all: &Modules) -> Option<Vec<String>> {
    let mut segments = path.split("::").filter(|s| !s.is_empty());
    let first = segments.next()?;
    let mut base: Vec<String> = match first {
        "crate" => Vec::new(),
        "self" => module.to_vec(),
        "super" => {
            let mut base = module.to_vec();
            base.pop();
            base
        }
        // A use path may start at a child module (`pub use child::Item;` in a mod.rs).
        child if all.contains_key(&[module, &[child.to_string()]].concat()) => {
            [module, &[child.to_string()]].concat()
        }
        _ => return None,
    };
    for segment in segments {
        if segment == "super" {
            base.pop();
            continue;
        }
        base.push(segment.to_string());
    }
    while !base.is_empty() && !all.contains_key(&base) {
        base.pop();
    }
    Some(base)
}

/// Strongly connected components of more than one module (Tarjan, iterative enough for a
/// crate's few dozen files).
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        found: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            let Some((w, _)) = s.edges.get_key_value(w) else {
                continue;
            };
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
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
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// The module graph of the crate whose sources are under `src`.
fn graph(src: &Path) -> Result<BTreeMap<Vec<String>, BTreeSet<Vec<String>>>> {
    let all = modules(src)?;
    let mut edges = BTreeMap::new();
    for (module, file) in &all {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        let targets: BTreeSet<Vec<String>> = paths_in(&code_of(&text))
            .iter()
            .filter_map(|p| resolve(p, module, &all))
            .filter(|target| target != module && !target.is_empty())
            .collect();
        edges.insert(module.clone(), targets);
    }
    Ok(edges)
}

/// Fails with every cycle among the modules of the crate under `src`.
pub fn check(src: &Path) -> Result<()> {
    let found = cycles(&graph(src)?);
    if found.is_empty() {
        return Ok(());
    }
    let name = |m: &Vec<String>| m.join("::");
    let listed: Vec<String> = found
        .iter()
        .map(|c| c.iter().map(name).collect::<Vec<_>>().join(" <-> "))
        .collect();
    bail!("module cycles in {}: {}", src.display(), listed.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_trees_expand_to_full_paths() {
        assert_eq!(
            expand_use_tree("crate::{a::B, c::{d, e::F}}"),
            ["crate::a::B", "crate::c::d", "crate::c::e::F"]
        );
        assert_eq!(expand_use_tree("super::x"), ["super::x"]);
    }

    #[test]
    fn a_cycle_through_three_files_is_found_and_a_chain_is_not() {
        let dir = std::env::temp_dir().join(format!("module-cycles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("folder")).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write(
            "main.rs",
            "mod a;\nmod folder;\n// crate::a is only named here\n",
        );
        write("a.rs", "use crate::folder::B;\n");
        write("folder/mod.rs", "mod b;\npub mod c;\npub use b::B;\n");
        write("folder/b.rs", "pub struct B;\nfn f() { super::c::g() }\n");
        write(
            "folder/c.rs",
            "pub fn g() {}\n#[cfg(test)]\nmod tests {\n    use super::super::B;\n}\n",
        );
        check(&dir).unwrap();
        write("folder/c.rs", "use crate::{a, x::{y}};\npub fn g() {}\n");
        let error = check(&dir).unwrap_err().to_string();
        assert!(
            error.contains("a <-> folder <-> folder::b <-> folder::c"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
