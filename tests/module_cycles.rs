//! Keeps the module graph of `src/` free of import cycles.
//!
//! It reads every `.rs` file under `src/` as plain text (no cargo metadata, no compiler) and
//! collects the paths that start with `crate::`, `super::` or `self::` (in `use` items, with
//! their `{...}` groups expanded, and in expressions and types alike). Each path becomes an
//! edge between two modules: for an import in module `a::b::c` of `a::x::y::Item`, the edge
//! is `b -> x` inside `a`, the level where the two paths part. So there is one graph per
//! module that has submodules: the crate's top-level modules (`compute`, `vmm`, ...), the
//! submodules of each of them (`vmm::vm`, `vmm::snapshot`, ...), and so on down.
//!
//! Rules:
//! - Between the top-level modules of `src/` no cycle is allowed at all: no two modules may
//!   import each other, directly or round a longer loop.
//! - Inside a module, a cycle among its submodules fails unless [`ALLOWED`] lists it (the
//!   ones still being taken apart; the list only shrinks).
//! - A module's own file (`mod.rs`) is the module itself, not one of its submodules: its
//!   children may use what it defines, and it declares and uses them, so edges between a
//!   module and its own descendants are not counted.
//! - Test code is left out: an item under `#[cfg(test)]` (the `mod tests { ... }` blocks, a
//!   test-only `use`, a `#[cfg(test)] mod x;` file). Tests may reach across freely; the
//!   structure this guards is the one the program is built from.
//! - Comments and string literals are skipped, so doc text that names a path is no import.
//!
//! A failure names the cycle and, for each step of it, the files and lines that import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Submodule cycles that exist and are being removed (issue 11): (parent module, the
/// submodules of the cycle). A cycle found inside `parent` passes when all of its
/// submodules are in one entry. Shrink this list as cycles go; never grow it.
const ALLOWED: &[(&str, &[&str])] = &[];

/// One import: the module it is written in, the path it names (absolute, from the crate
/// root), and where.
#[derive(Clone, Debug)]
struct Import {
    from: Vec<String>,
    target: Vec<String>,
    file: String,
    line: usize,
}

/// A source file: its path relative to the crate root (`src/vmm/vm.rs`) and its text.
struct Source {
    path: String,
    text: String,
}

/// The module path of a file: `src/main.rs` -> [], `src/vmm/mod.rs` -> [vmm],
/// `src/vmm/vm.rs` -> [vmm, vm].
fn module_of(path: &str) -> Vec<String> {
    let rel = path.strip_prefix("src/").unwrap_or(path);
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "main" | "lib")
    ) {
        parts.pop();
    }
    parts
}

/// Replaces comments, string and char literals by spaces (keeping newlines, so line
/// numbers hold).
fn strip_comments_and_strings(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(k).copied().unwrap_or('\0');
        // Line comment.
        if at(i) == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
            continue;
        }
        // Block comment (nested).
        if at(i) == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if at(i) == '/' && at(i + 1) == '*' {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if at(i) == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            continue;
        }
        let prev_ident = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
        // Raw strings: r"..", r#".."#, br#".."#.
        if !prev_ident && (at(i) == 'r' || (at(i) == 'b' && at(i + 1) == 'r')) {
            let mut j = if at(i) == 'b' { i + 2 } else { i + 1 };
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            if at(j) == '"' {
                j += 1;
                loop {
                    if j >= c.len() {
                        break;
                    }
                    if c[j] == '"' && (0..hashes).all(|h| at(j + 1 + h) == '#') {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                for &ch in &c[i..j.min(c.len())] {
                    out.push(blank(ch));
                }
                i = j;
                continue;
            }
        }
        // Strings and byte strings.
        if at(i) == '"' || (!prev_ident && at(i) == 'b' && at(i + 1) == '"') {
            let mut j = if at(i) == 'b' { i + 2 } else { i + 1 };
            while j < c.len() && c[j] != '"' {
                if c[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            let end = (j + 1).min(c.len());
            for &ch in &c[i..end] {
                out.push(blank(ch));
            }
            i = end;
            continue;
        }
        // Char literals ('a', '\n', '\''); a lifetime ('a) is left alone.
        if at(i) == '\'' {
            let end = if at(i + 1) == '\\' {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                Some(j)
            } else if at(i + 2) == '\'' {
                Some(i + 2)
            } else {
                None
            };
            if let Some(end) = end {
                let end = (end + 1).min(c.len());
                for &ch in &c[i..end] {
                    out.push(blank(ch));
                }
                i = end;
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// Blanks every item under `#[cfg(test)]` and returns the names of `#[cfg(test)] mod x;`
/// declarations (test-only files).
fn strip_test_items(text: &str) -> (String, Vec<String>) {
    const ATTR: &str = "#[cfg(test)]";
    let attr: Vec<char> = ATTR.chars().collect();
    let mut c: Vec<char> = text.chars().collect();
    let mut test_files = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i] != '#' || !c[i..].starts_with(&attr) {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + ATTR.len();
        let mut depth = 0i32;
        let mut item = String::new();
        while j < c.len() {
            let ch = c[j];
            item.push(ch);
            j += 1;
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth <= 0 {
                        break;
                    }
                }
                ';' if depth == 0 => break,
                _ => {}
            }
        }
        let words: Vec<&str> = item
            .split(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == ';'))
            .filter(|w| !w.is_empty())
            .collect();
        if let Some(pos) = words.iter().position(|w| *w == "mod")
            && let Some(name) = words.get(pos + 1)
            && let Some(name) = name.strip_suffix(';')
        {
            test_files.push(name.to_string());
        }
        for ch in &mut c[start..j] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
        i = j;
    }
    (c.into_iter().collect(), test_files)
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// A tiny reader of use-trees: `a::b::{c, d::e, self, f as g}`.
struct Reader<'a> {
    c: &'a [char],
    i: usize,
}

impl Reader<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.c.len() && self.c[self.i].is_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, s: &str) -> bool {
        self.skip_ws();
        let n = s.chars().count();
        if self.c.len() >= self.i + n && self.c[self.i..self.i + n].iter().copied().eq(s.chars()) {
            self.i += n;
            true
        } else {
            false
        }
    }
    fn ident(&mut self) -> Option<String> {
        self.skip_ws();
        let start = self.i;
        while self.i < self.c.len() && is_ident(self.c[self.i]) {
            self.i += 1;
        }
        (self.i > start).then(|| self.c[start..self.i].iter().collect())
    }
    /// Reads a tree after `prefix::`, pushing every full path it names into `out`.
    fn tree(&mut self, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.eat("{") {
            loop {
                if self.eat("}") {
                    break;
                }
                let before = self.i;
                self.tree(prefix.clone(), out);
                self.eat(",");
                if self.i == before {
                    // Not a use-tree after all (an expression): give up on this group.
                    break;
                }
            }
            return;
        }
        if self.eat("*") {
            out.push(prefix);
            return;
        }
        let Some(name) = self.ident() else {
            out.push(prefix);
            return;
        };
        let mut path = prefix;
        if name != "self" {
            path.push(name);
        }
        if self.eat("::") {
            self.tree(path, out);
        } else {
            out.push(path);
        }
    }
}

/// The path starts looked for, as text and as chars.
const KEYWORDS: [(&str, &[char]); 3] = [
    ("crate::", &['c', 'r', 'a', 't', 'e', ':', ':']),
    ("super::", &['s', 'u', 'p', 'e', 'r', ':', ':']),
    ("self::", &['s', 'e', 'l', 'f', ':', ':']),
];

/// The imports of one file (production code only).
fn imports_of(file: &str, text: &str) -> (Vec<Import>, Vec<String>) {
    let from = module_of(file);
    let (text, test_files) = strip_test_items(&strip_comments_and_strings(text));
    let c: Vec<char> = text.chars().collect();
    let mut line_starts = vec![0usize];
    for (k, ch) in c.iter().enumerate() {
        if *ch == '\n' {
            line_starts.push(k + 1);
        }
    }
    let line_of = |pos: usize| line_starts.partition_point(|&s| s <= pos);
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if !matches!(c[i], 'c' | 's') {
            i += 1;
            continue;
        }
        let boundary = i == 0 || !(is_ident(c[i - 1]) || c[i - 1] == '$' || c[i - 1] == ':');
        let rest = &c[i..];
        let kw = KEYWORDS
            .iter()
            .find(|(_, k)| rest.starts_with(k))
            .map(|(k, _)| *k);
        let (Some(kw), true) = (kw, boundary) else {
            i += 1;
            continue;
        };
        let mut r = Reader { c: &c, i };
        // Resolve the leading `crate`/`super`/`self` segments.
        let mut base: Vec<String> = from.clone();
        let mut relative = true;
        if kw == "crate::" {
            base.clear();
            r.i += kw.len();
            relative = false;
        }
        if relative {
            loop {
                if r.eat("super::") {
                    base.pop();
                } else if r.eat("self::") {
                } else {
                    break;
                }
            }
        }
        let mut paths = Vec::new();
        r.tree(base, &mut paths);
        let line = line_of(i);
        for target in paths {
            out.push(Import {
                from: from.clone(),
                target,
                file: file.to_string(),
                line,
            });
        }
        i = r.i.max(i + 1);
    }
    (out, test_files)
}

/// An edge between two submodules of `parent`, with the imports that make it.
type Edges = BTreeMap<(String, String), Vec<Import>>;

/// The import graph, one per parent module (`""` is the crate root).
fn graphs(sources: &[Source]) -> BTreeMap<String, Edges> {
    // Files declared `#[cfg(test)] mod x;` are test code.
    let mut imports = Vec::new();
    let mut test_modules: BTreeSet<Vec<String>> = BTreeSet::new();
    for s in sources {
        let (found, test_files) = imports_of(&s.path, &s.text);
        imports.extend(found);
        for name in test_files {
            let mut m = module_of(&s.path);
            m.push(name);
            test_modules.insert(m);
        }
    }
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| module_of(&s.path)).collect();
    let is_test = |m: &[String]| test_modules.iter().any(|t| m.starts_with(t));
    let mut out: BTreeMap<String, Edges> = BTreeMap::new();
    for imp in imports {
        if is_test(&imp.from) {
            continue;
        }
        // The module the path lands in: its longest prefix that is a module.
        let Some(target) = (0..=imp.target.len())
            .rev()
            .map(|n| imp.target[..n].to_vec())
            .find(|p| modules.contains(p))
        else {
            continue;
        };
        let common = imp
            .from
            .iter()
            .zip(&target)
            .take_while(|(a, b)| a == b)
            .count();
        if common >= imp.from.len() || common >= target.len() {
            // A module and its own ancestor or descendant: not counted.
            continue;
        }
        let parent = imp.from[..common].join("::");
        let edge = (imp.from[common].clone(), target[common].clone());
        out.entry(parent)
            .or_default()
            .entry(edge)
            .or_default()
            .push(imp);
    }
    out
}

/// The strongly connected components of more than one node (Tarjan).
fn cycles(edges: &Edges) -> Vec<Vec<String>> {
    let mut adj: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        adj.entry(a).or_default().push(b);
        adj.entry(b).or_default();
    }
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(v: &'a str, adj: &BTreeMap<&'a str, Vec<&'a str>>, s: &mut State<'a>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        for &w in &adj[v] {
            if !s.index.contains_key(w) {
                visit(w, adj, s);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for &v in adj.keys() {
        if !s.index.contains_key(v) {
            visit(v, &adj, &mut s);
        }
    }
    s.out
}

/// One concrete loop inside a component, from its first node back to it (breadth-first,
/// so the shortest one).
fn one_loop(edges: &Edges, comp: &[String]) -> Vec<String> {
    let inside: BTreeSet<&String> = comp.iter().collect();
    let start = &comp[0];
    let mut prev: BTreeMap<&String, &String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for (a, b) in edges.keys() {
            if a != v || !inside.contains(b) {
                continue;
            }
            if b == start {
                let mut path = vec![v.clone()];
                let mut cur = v;
                while cur != start {
                    cur = prev[cur];
                    path.push(cur.clone());
                }
                path.reverse();
                path.push(start.clone());
                return path;
            }
            if !prev.contains_key(b) {
                prev.insert(b, v);
                queue.push_back(b);
            }
        }
    }
    comp.to_vec()
}

/// Describes every cycle that is not allowed; empty when the tree is clean.
fn violations(sources: &[Source], allowed: &[(&str, &[&str])]) -> Vec<String> {
    let mut out = Vec::new();
    for (parent, edges) in graphs(sources) {
        for comp in cycles(&edges) {
            let ok = !parent.is_empty()
                && allowed
                    .iter()
                    .any(|(p, set)| *p == parent && comp.iter().all(|m| set.contains(&m.as_str())));
            if ok {
                continue;
            }
            let name = |m: &str| {
                if parent.is_empty() {
                    m.to_string()
                } else {
                    format!("{parent}::{m}")
                }
            };
            let path = one_loop(&edges, &comp);
            let mut text = format!(
                "import cycle {} in {}: {}\n",
                if parent.is_empty() {
                    "between top-level modules"
                } else {
                    "between submodules"
                },
                if parent.is_empty() {
                    "src/".to_string()
                } else {
                    format!("`{parent}`")
                },
                path.iter()
                    .map(|m| name(m))
                    .collect::<Vec<_>>()
                    .join(" -> ")
            );
            for step in path.windows(2) {
                let imps = &edges[&(step[0].clone(), step[1].clone())];
                text.push_str(&format!("  {} -> {}:\n", name(&step[0]), name(&step[1])));
                for imp in imps.iter().take(5) {
                    text.push_str(&format!(
                        "    {}:{} uses crate::{}\n",
                        imp.file,
                        imp.line,
                        imp.target.join("::")
                    ));
                }
                if imps.len() > 5 {
                    text.push_str(&format!("    ... and {} more\n", imps.len() - 5));
                }
            }
            if comp.len() > path.len() - 1 {
                text.push_str(&format!(
                    "  (all of {} import each other round some loop)\n",
                    comp.join(", ")
                ));
            }
            out.push(text);
        }
    }
    out
}

fn read_tree(root: &Path, dir: &Path, out: &mut Vec<Source>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            read_tree(root, &p, out);
        } else if p.extension().is_some_and(|e| e == "rs")
            && let Ok(text) = std::fs::read_to_string(&p)
        {
            let rel = p.strip_prefix(root).unwrap_or(&p);
            out.push(Source {
                path: rel.to_string_lossy().replace('\\', "/"),
                text,
            });
        }
    }
}

#[test]
fn no_import_cycles_in_src() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    read_tree(root, &root.join("src"), &mut sources);
    assert!(
        sources.iter().any(|s| s.path == "src/main.rs"),
        "src/main.rs not found under {}",
        root.display()
    );
    let found = violations(&sources, ALLOWED);
    assert!(
        found.is_empty(),
        "\n{}\nMove what both sides need into a leaf module (or to the side that owns it) so \
         only one direction remains. The rules are at the top of tests/module_cycles.rs.\n",
        found.join("\n")
    );
}

fn src(path: &str, text: &str) -> Source {
    Source {
        path: path.into(),
        text: text.into(),
    }
}

#[test]
fn a_planted_top_level_cycle_is_found_with_files_and_lines() {
    let tree = [
        src("src/main.rs", "mod a;\nmod b;\nfn main() { a::f(); }\n"),
        src("src/a.rs", "use crate::b::G;\npub fn f() {}\n"),
        src(
            "src/b.rs",
            "//! Not an import: crate::a::f\npub struct G;\n\nfn g() { crate::a::f() }\n",
        ),
    ];
    let found = violations(&tree, &[]);
    assert_eq!(found.len(), 1, "{found:?}");
    let text = &found[0];
    assert!(text.contains("between top-level modules"), "{text}");
    assert!(text.contains("a -> b -> a"), "{text}");
    assert!(text.contains("src/a.rs:1 uses crate::b::G"), "{text}");
    assert!(text.contains("src/b.rs:4 uses crate::a::f"), "{text}");
}

#[test]
fn a_planted_submodule_cycle_through_super_and_groups_is_found() {
    let tree = [
        src("src/main.rs", "mod m;\n"),
        src("src/m/mod.rs", "pub mod x;\npub mod y;\npub mod z;\n"),
        src("src/m/x.rs", "use super::{y::Y, z};\n"),
        src("src/m/y.rs", "pub struct Y;\n"),
        src("src/m/z.rs", "use super::super::m::x as _;\n"),
    ];
    let found = violations(&tree, &[]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("in `m`: m::x -> m::z -> m::x"),
        "{}",
        found[0]
    );
    assert!(
        found[0].contains("src/m/x.rs:1 uses crate::m::z"),
        "{}",
        found[0]
    );
    assert!(
        found[0].contains("src/m/z.rs:1 uses crate::m::x"),
        "{}",
        found[0]
    );
    // Listed in the allowlist, the same cycle passes; a top-level one never does.
    assert!(violations(&tree, &[("m", &["x", "z"])]).is_empty());
}

#[test]
fn test_code_strings_and_parent_modules_make_no_edges() {
    let tree = [
        src("src/main.rs", "mod a;\nmod b;\n"),
        src(
            "src/a/mod.rs",
            "pub mod c;\nuse c::C;\npub fn helper() {}\n#[cfg(test)]\nmod tests {\n    use crate::b::B;\n}\n",
        ),
        src("src/a/c.rs", "use super::helper;\npub struct C;\n"),
        src(
            "src/b.rs",
            "use crate::a::c::C;\npub struct B;\nconst S: &str = \"crate::a::helper\";\n#[cfg(test)]\nuse crate::a::helper;\n#[cfg(test)]\nmod more;\n",
        ),
        src("src/b/more.rs", "use crate::a::helper;\n"),
    ];
    assert!(violations(&tree, &[]).is_empty());
}
