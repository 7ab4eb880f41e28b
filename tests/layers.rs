//! The layering `jobs/src/lib.rs` claims, checked: every `crate::…` path
//! in `jobs/src` (in `use` lines and in code; not in comments or test
//! modules) is an import, and
//!
//! - where a folder's `lib.rs`/`mod.rs` lists its modules under
//!   `// layer N — …` lines, a module imports only from modules of a lower
//!   layer (never from one above it, nor from a sibling of its own layer);
//! - no two modules anywhere import each other, directly or round a
//!   longer circle (files are the nodes; a folder's `mod.rs` declaring or
//!   re-exporting its own children is not an import).
//!
//! Test modules are left out: they may use the whole library (as Cargo
//! lets dev-dependencies form circles), the library itself may not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside the crate: `["engine", "plan", "codec"]`.
type Module = Vec<String>;

/// What the check found wrong, one line each.
pub fn violations(src: &Path) -> Vec<String> {
    let files = rust_files(src);
    let modules: BTreeSet<Module> = files.keys().cloned().collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        for path in crate_paths(&library_code(&text), module) {
            let Some(target) = resolve(&path, &modules) else {
                continue;
            };
            let related = target.starts_with(module) || module.starts_with(&target);
            if !related {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    let mut out = Vec::new();
    for (from, targets) in &edges {
        for to in targets {
            if let Some(v) = layer_violation(src, from, to) {
                out.push(v);
            }
        }
    }
    for circle in circles(&edges) {
        let names: Vec<String> = circle.iter().map(name).collect();
        out.push(format!("import circle: {}", names.join(" → ")));
    }
    // the same between folders: `a/x.rs` importing `b/y.rs` is `a` → `b`
    let mut folders: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, targets) in &edges {
        for to in targets {
            let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
            let (a, b) = (&from[..=common], &to[..=common]);
            if (a, b) != (from.as_slice(), to.as_slice()) {
                folders.entry(a.to_vec()).or_default().insert(b.to_vec());
            }
        }
    }
    for circle in circles(&folders) {
        let names: Vec<String> = circle.iter().map(name).collect();
        out.push(format!("folders import each other: {}", names.join(" → ")));
    }
    out
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".to_string()
    } else {
        m.join("::")
    }
}

/// Every library source file by its module path (binaries, which import
/// the library by name, and `tests.rs` files left out).
fn rust_files(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read source dir") {
            let path = entry.expect("dir entry").path();
            let rel = path.strip_prefix(src).expect("under src");
            if path.is_dir() {
                if rel != Path::new("bin") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let mut module: Module = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match module.last().map(String::as_str) {
                Some("tests") => continue,
                Some("mod") | Some("lib") => {
                    module.pop();
                }
                _ => {}
            }
            out.insert(module, path);
        }
    }
    out
}

/// The text without comments and without the test module at the end.
fn library_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") && lines.peek().is_some_and(|n| n.contains("mod ")) {
            break;
        }
        let code = match line.find("//") {
            // a `//` inside a string (a URL) is not a comment: keep the line
            Some(i) if line[..i].matches('"').count() % 2 == 0 => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The paths a file names with `crate::` (and `super::`), `use` trees
/// expanded: `crate::a::{b, c::d}` gives `a::b` and `a::c::d`.
fn crate_paths(code: &str, module: &Module) -> Vec<Module> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let start_ok = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':';
        let base: Option<(usize, Module)> = if !start_ok {
            None
        } else if rest.starts_with("crate::") {
            Some(("crate".len(), Vec::new()))
        } else if rest.starts_with("super::") {
            // `super` of `a/b.rs` (module a::b) and of `a/b/mod.rs` is a
            let mut parent = module.clone();
            parent.pop();
            Some(("super".len(), parent))
        } else {
            None
        };
        match base {
            Some((skip, prefix)) => {
                let (paths, used) = use_tree(&code[i + skip..], prefix);
                out.extend(paths);
                i += skip + used.max(1);
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    out
}

/// Parses a use tree after a prefix (`::a::b`, `::{a, b::{c, d}}`, and
/// inside braces `a::b`); returns the full paths and the bytes read.
fn use_tree(text: &str, prefix: Module) -> (Vec<Module>, usize) {
    let bytes = text.as_bytes();
    let mut path = prefix;
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i > start {
            path.push(text[start..i].to_string());
        }
        if text[i..].starts_with("::{") {
            i += 3;
            let mut out = Vec::new();
            loop {
                while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    return (out, i + 1);
                }
                let (paths, used) = use_tree(&text[i..], path.clone());
                out.extend(paths);
                i += used.max(1);
                // skip `as name` and anything up to the next item
                while i < bytes.len() && bytes[i] != b',' && bytes[i] != b'}' {
                    i += 1;
                }
            }
        } else if text[i..].starts_with("::") {
            i += 2;
        } else {
            return (vec![path], i);
        }
    }
}

/// The deepest module a path names (`engine::session::Engine` →
/// `engine::session`); `None` for a path outside the crate's modules.
fn resolve(path: &Module, modules: &BTreeSet<Module>) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
}

/// The layers a folder's `lib.rs`/`mod.rs` declares: each `pub mod x;`
/// after a `// layer N` line is in layer N. `None` when it declares none.
fn layers(src: &Path, folder: &[String]) -> Option<BTreeMap<String, usize>> {
    let file = if folder.is_empty() {
        src.join("lib.rs")
    } else {
        src.join(folder.join("/")).join("mod.rs")
    };
    let text = std::fs::read_to_string(file).ok()?;
    let mut out = BTreeMap::new();
    let mut layer = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("// layer ") {
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            layer = n.parse().ok();
        } else if let (Some(l), Some(m)) = (layer, line.strip_prefix("pub mod ")) {
            out.insert(m.trim_end_matches(';').to_string(), l);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// `from` importing `to` against the layers of the folder where their
/// paths part.
fn layer_violation(src: &Path, from: &Module, to: &Module) -> Option<String> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    let folder = &from[..common];
    let declared = layers(src, folder)?;
    let (a, b) = (&from[common], &to[common]);
    let where_ = if folder.is_empty() {
        "lib.rs".to_string()
    } else {
        format!("{}/mod.rs", folder.join("/"))
    };
    match (declared.get(a), declared.get(b)) {
        (Some(la), Some(lb)) if lb < la => None,
        (Some(la), Some(lb)) => Some(format!(
            "{} imports {}: {where_} puts {b} in layer {lb}, {} its own layer {la}",
            name(from),
            name(to),
            if lb == la { "the same as" } else { "above" }
        )),
        _ => Some(format!(
            "{} imports {}: {where_} gives {a} or {b} no layer",
            name(from),
            name(to)
        )),
    }
}

/// Each import circle once, as the modules round it (the first repeated
/// at the end), found as the strongly connected components of the graph.
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    let nodes: BTreeSet<&Module> = edges
        .iter()
        .flat_map(|(f, ts)| std::iter::once(f).chain(ts))
        .collect();
    let reach = |from: &Module| -> BTreeSet<Module> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for t in edges.get(&m).into_iter().flatten() {
                if seen.insert(t.clone()) {
                    stack.push(t.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&Module, BTreeSet<Module>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done: BTreeSet<Module> = BTreeSet::new();
    let mut out = Vec::new();
    for n in &nodes {
        if done.contains(*n) || !reachable[n].contains(*n) {
            continue;
        }
        let component: Vec<Module> = nodes
            .iter()
            .filter(|m| reachable[n].contains(**m) && reachable[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        done.extend(component.iter().cloned());
        // the shortest circle through `n`, for the message
        let mut parent: BTreeMap<Module, Module> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([(*n).clone()]);
        while let Some(m) = queue.pop_front() {
            if parent.contains_key(*n) {
                break;
            }
            for t in edges.get(&m).into_iter().flatten() {
                if component.contains(t) && !parent.contains_key(t) {
                    parent.insert(t.clone(), m.clone());
                    queue.push_back(t.clone());
                }
            }
        }
        let mut circle = vec![(*n).clone()];
        let mut at = parent[*n].clone();
        while at != **n {
            circle.push(at.clone());
            at = parent[&at].clone();
        }
        circle.push((*n).clone());
        circle.reverse();
        out.push(circle);
    }
    out
}

#[test]
fn jobs_imports_follow_the_layers_lib_rs_declares() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "jobs/src breaks its layering ({} problems):\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn the_check_sees_a_circle_and_an_import_upwards() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("low")).unwrap();
    std::fs::write(
        src.join("lib.rs"),
        "// layer 0 — below\npub mod low;\n// layer 1 — above\npub mod high;\n",
    )
    .unwrap();
    std::fs::write(src.join("low/mod.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(
        src.join("low/a.rs"),
        "use crate::low::b;\nfn f() { crate::high::g() }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("low/b.rs"),
        "use crate::{high, low::{a, c as d}};\n// use crate::nothing;\n#[cfg(test)]\nmod tests {\n    use crate::high;\n}\n",
    )
    .unwrap();
    std::fs::write(src.join("high.rs"), "pub fn g() {}\n").unwrap();
    let found = violations(src);
    assert!(
        found.contains(
            &"low::a imports high: lib.rs puts high in layer 1, above its own layer 0".to_string()
        ),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|v| v.starts_with("low::b imports high")),
        "{found:#?}"
    );
    assert!(
        found.contains(&"import circle: low::a → low::b → low::a".to_string()),
        "{found:#?}"
    );
    assert!(!found.iter().any(|v| v.contains("nothing")), "{found:#?}");
}
