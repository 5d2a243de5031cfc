//! Module-dependency rules, checked over source text (std only).
//!
//! For every crate of the workspace (`src/`, `clients/rust/src`,
//! `loadtest/src`, `schema/src` without its flatc-generated module, which
//! lives outside `schema/src`), each `.rs` file is mapped to its module path
//! and its references to other modules of the same crate are collected:
//! `use crate::…`, `use super::…`, `use self::…`, grouped imports
//! (`use crate::{a, b::c}`), paths in code (`crate::a::b::X`,
//! `super::x()`), and `use` paths that start at a child module. Comments,
//! doc comments, string and character literals are skipped. A path to an
//! item re-exported by a `use` in the module it names is followed to where
//! the item comes from.
//!
//! Two rules are asserted:
//! - (a) no import cycle between sibling modules: for each module, the graph
//!   of its direct children, where A → B when something in A (or below)
//!   refers to something in B (or below). A child referring to its parent's
//!   items is not an edge between siblings.
//! - (b) the root crate's layers: the top-level folders of `src/` in the
//!   order `telemetry` < `core` < `backend` < `runtime` < `edge` < `ops`
//!   (`lib.rs` and `main.rs` above all); a module refers only to its own
//!   layer or lower ones, and `src/core/engine/` refers to nothing of the
//!   crate outside `src/core/engine/`.
//!
//! This test owns the checker and the list of the root crate's known
//! violations only; it never reads anything but source text and never
//! builds or runs the code it checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

// ---------------------------------------------------------------------------
// KNOWN VIOLATIONS
// ---------------------------------------------------------------------------

/// **Known violations of the root crate, to be emptied.** `src/` is being
/// restructured into its layers; until that is done, these references
/// (`file -> module`, exactly as the checker prints them) are subtracted
/// before the root crate's checks (cycles and layers). Entries that no
/// longer occur are printed by `the_root_crate_follows_its_layers` (run it
/// with `--nocapture`): delete them. Never add to this list to make new code
/// pass; fix the dependency instead. The SDK, loadtest and schema crates get
/// no allowances.
const KNOWN_VIOLATIONS: &[&str] = &[];

// ---------------------------------------------------------------------------
// Lexing: identifiers, `::` and punctuation, with line numbers. Comments and
// literals become nothing (or an opaque literal), so a path inside them is
// never seen.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
    /// A string, character or number literal (contents dropped).
    Literal,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: u32,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits Rust source into tokens. Unterminated comments or literals end
/// the input; nothing here can panic on odd text.
fn lex(src: &str) -> Vec<Token> {
    let chars: Vec<char> = src.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut tokens = Vec::new();
    let mut line = 1u32;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start_line = line;
        let mut push = |tok: Tok| {
            tokens.push(Token {
                tok,
                line: start_line,
            })
        };
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            // Block comments nest.
            let mut depth = 0usize;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(&chars, i) {
            // r"…", r#"…"#, br"…", cr#"…"#: no escapes.
            let mut j = i;
            while chars[j] != '"' {
                j += 1;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|k| at(j + 1 + k) == '#') {
                    j += 1 + hashes;
                    break;
                }
                if chars[j] == '\n' {
                    line += 1;
                }
                j += 1;
            }
            i = j;
            push(Tok::Literal);
        } else if c == '"' || ((c == 'b' || c == 'c') && at(i + 1) == '"') {
            let mut j = if c == '"' { i + 1 } else { i + 2 };
            while j < chars.len() && chars[j] != '"' {
                if chars[j] == '\\' {
                    j += 1;
                }
                if at(j) == '\n' {
                    line += 1;
                }
                j += 1;
            }
            i = j + 1;
            push(Tok::Literal);
        } else if c == '\'' || (c == 'b' && at(i + 1) == '\'') {
            let q = if c == '\'' { i } else { i + 1 };
            if at(q + 1) == '\\' {
                // An escaped character literal (`'\''`, `'\u{…}'`): the
                // escaped character, then up to the closing quote.
                let mut j = q + 3;
                while j < chars.len() && chars[j] != '\'' && chars[j] != '\n' {
                    j += 1;
                }
                i = j + 1;
                push(Tok::Literal);
            } else if at(q + 2) == '\'' {
                i = q + 3;
                push(Tok::Literal);
            } else {
                // A lifetime or label: the name that follows is harmless.
                i = q + 1;
            }
        } else if c == 'r' && at(i + 1) == '#' && is_ident_start(at(i + 2)) {
            let mut j = i + 2;
            while j < chars.len() && is_ident_continue(chars[j]) {
                j += 1;
            }
            push(Tok::Ident(chars[i + 2..j].iter().collect()));
            i = j;
        } else if is_ident_start(c) {
            let mut j = i;
            while j < chars.len() && is_ident_continue(chars[j]) {
                j += 1;
            }
            push(Tok::Ident(chars[i..j].iter().collect()));
            i = j;
        } else if c.is_ascii_digit() {
            let mut j = i;
            while j < chars.len()
                && (is_ident_continue(chars[j]) || (chars[j] == '.' && at(j + 1).is_ascii_digit()))
            {
                j += 1;
            }
            push(Tok::Literal);
            i = j;
        } else if c == ':' && at(i + 1) == ':' {
            push(Tok::PathSep);
            i += 2;
        } else {
            push(Tok::Punct(c));
            i += 1;
        }
    }
    tokens
}

/// The number of `#`s when a raw string literal starts at `i`.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if matches!(chars.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some(hashes)
}

// ---------------------------------------------------------------------------
// Parsing: module scopes, `use` trees and paths in code.
// ---------------------------------------------------------------------------

/// A module path from the crate root (`[]` is the root).
type ModPath = Vec<String>;

/// How a path starts, before it is made absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Anchor {
    /// `crate::`, or the library's own name in `main.rs`.
    Crate,
    /// `super::` this many times.
    Super(usize),
    /// `self::`
    SelfMod,
    /// A plain first segment (a child module, an imported name, or another
    /// crate).
    Plain,
}

/// One path as written in a module.
#[derive(Clone, Debug)]
struct RawPath {
    file: String,
    line: u32,
    /// The module the path is written in (inline modules included).
    scope: ModPath,
    anchor: Anchor,
    segments: Vec<String>,
    /// From a `use` (which may bind a name) rather than from code.
    binding: Option<String>,
    /// A `use …::*`.
    glob: bool,
}

/// What one file declares and refers to.
#[derive(Debug, Default)]
struct Parsed {
    /// Inline modules (`mod tests { … }`), as full paths.
    inline_modules: Vec<ModPath>,
    paths: Vec<RawPath>,
}

fn ident(tokens: &[Token], i: usize) -> Option<&str> {
    match tokens.get(i).map(|t| &t.tok) {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

fn is(tokens: &[Token], i: usize, tok: &Tok) -> bool {
    tokens.get(i).map(|t| &t.tok) == Some(tok)
}

/// Parses one file whose module path is `module`. `crate_alias` is a name
/// that means `crate` at the start of a path (the library's name in the
/// root crate's `main.rs`).
fn parse(file: &str, module: &ModPath, src: &str, crate_alias: Option<&str>) -> Parsed {
    let tokens = lex(src);
    let mut parsed = Parsed::default();
    // (module, brace depth inside it) for each open inline module.
    let mut scopes: Vec<(ModPath, usize)> = vec![(module.clone(), 0)];
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let scope = scopes.last().map(|(m, _)| m.clone()).unwrap_or_default();
        match &tokens[i].tok {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                if scopes.len() > 1 && scopes.last().map(|s| s.1) == Some(depth) {
                    scopes.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            Tok::Punct('$') => {
                // `$crate::…` in a macro: not a path of this module.
                i += 2;
            }
            Tok::Ident(word) if word == "mod" => {
                if let Some(name) = ident(&tokens, i + 1) {
                    if is(&tokens, i + 2, &Tok::Punct('{')) {
                        let mut inner = scope.clone();
                        inner.push(name.to_owned());
                        parsed.inline_modules.push(inner.clone());
                        depth += 1;
                        scopes.push((inner, depth));
                        i += 3;
                        continue;
                    }
                }
                i += 1;
            }
            Tok::Ident(word) if word == "pub" => {
                // `pub(in path)` names a scope, not a dependency.
                if is(&tokens, i + 1, &Tok::Punct('(')) && ident(&tokens, i + 2) == Some("in") {
                    let mut j = i + 3;
                    while j < tokens.len() && !is(&tokens, j, &Tok::Punct(')')) {
                        j += 1;
                    }
                    i = j + 1;
                } else {
                    i += 1;
                }
            }
            Tok::Ident(word) if word == "use" && !is(&tokens, i + 1, &Tok::Punct('<')) => {
                let mut j = i + 1;
                let mut out = Vec::new();
                parse_use_tree(&tokens, &mut j, Vec::new(), &mut out);
                for (segments, binding, glob, line) in out {
                    if let Some(path) = raw_path(
                        file,
                        &scope,
                        segments,
                        Some(binding),
                        glob,
                        line,
                        crate_alias,
                    ) {
                        parsed.paths.push(path);
                    }
                }
                // Skip to the end of the declaration.
                while j < tokens.len() && !is(&tokens, j, &Tok::Punct(';')) {
                    j += 1;
                }
                i = j + 1;
            }
            Tok::Ident(word)
                if (word == "crate"
                    || word == "super"
                    || word == "self"
                    || Some(word.as_str()) == crate_alias)
                    && is(&tokens, i + 1, &Tok::PathSep)
                    && !(i > 0 && is(&tokens, i - 1, &Tok::PathSep)) =>
            {
                let mut segments = Vec::new();
                let mut line = tokens[i].line;
                let mut j = i;
                while let Some(seg) = ident(&tokens, j) {
                    segments.push(seg.to_owned());
                    line = tokens[j].line;
                    if is(&tokens, j + 1, &Tok::PathSep) && ident(&tokens, j + 2).is_some() {
                        j += 2;
                    } else {
                        break;
                    }
                }
                if let Some(path) = raw_path(file, &scope, segments, None, false, line, crate_alias)
                {
                    parsed.paths.push(path);
                }
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    parsed
}

/// One leaf of a `use` tree: the full path, the name it binds, whether it is
/// a glob, and its line.
type UseLeaf = (Vec<String>, String, bool, u32);

/// Parses a `use` tree starting at `*i` (after `use` or inside a group),
/// with the segments of the enclosing groups in `prefix`.
fn parse_use_tree(tokens: &[Token], i: &mut usize, prefix: Vec<String>, out: &mut Vec<UseLeaf>) {
    let mut path = prefix;
    if is(tokens, *i, &Tok::PathSep) {
        // `use ::name`: another crate, always.
        path.push("::".to_owned());
        *i += 1;
    }
    loop {
        match tokens.get(*i).map(|t| (&t.tok, t.line)) {
            Some((Tok::Punct('{'), _)) => {
                *i += 1;
                loop {
                    if is(tokens, *i, &Tok::Punct('}')) || *i >= tokens.len() {
                        *i += 1;
                        return;
                    }
                    parse_use_tree(tokens, i, path.clone(), out);
                    if is(tokens, *i, &Tok::Punct(',')) {
                        *i += 1;
                    }
                }
            }
            Some((Tok::Punct('*'), line)) => {
                *i += 1;
                out.push((path, String::new(), true, line));
                return;
            }
            Some((Tok::Ident(seg), line)) => {
                let seg = seg.clone();
                *i += 1;
                if is(tokens, *i, &Tok::PathSep) {
                    path.push(seg);
                    *i += 1;
                    continue;
                }
                let mut binding = seg.clone();
                if seg == "self" {
                    binding = path.last().cloned().unwrap_or_default();
                } else {
                    path.push(seg);
                }
                if ident(tokens, *i) == Some("as") {
                    if let Some(alias) = ident(tokens, *i + 1) {
                        binding = alias.to_owned();
                    }
                    *i += 2;
                }
                out.push((path, binding, false, line));
                return;
            }
            _ => return,
        }
    }
}

/// Classifies how `segments` starts; `None` for another crate's path.
fn raw_path(
    file: &str,
    scope: &ModPath,
    mut segments: Vec<String>,
    binding: Option<String>,
    glob: bool,
    line: u32,
    crate_alias: Option<&str>,
) -> Option<RawPath> {
    let first = segments.first()?.clone();
    if first == "::" {
        return None;
    }
    let anchor = if first == "crate" || Some(first.as_str()) == crate_alias {
        segments.remove(0);
        Anchor::Crate
    } else if first == "super" {
        let n = segments.iter().take_while(|s| *s == "super").count();
        segments.drain(..n);
        Anchor::Super(n)
    } else if first == "self" {
        segments.remove(0);
        Anchor::SelfMod
    } else {
        Anchor::Plain
    };
    Some(RawPath {
        file: file.to_owned(),
        line,
        scope: scope.clone(),
        anchor,
        segments,
        binding,
        glob,
    })
}

// ---------------------------------------------------------------------------
// Resolution: absolute paths, re-exports, and the module each path lands in.
// ---------------------------------------------------------------------------

/// A reference from one module to another of the same crate.
#[derive(Clone, Debug)]
struct Reference {
    file: String,
    line: u32,
    from: ModPath,
    to: ModPath,
    /// The absolute path, for messages.
    path: String,
}

impl Reference {
    /// The `file -> module` key of [`KNOWN_VIOLATIONS`].
    fn key(&self) -> String {
        format!("{} -> {}", self.file, module_name(&self.to))
    }

    fn site(&self) -> String {
        format!("{}:{} ({})", self.file, self.line, self.path)
    }
}

fn module_name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".to_owned()
    } else {
        format!("crate::{}", m.join("::"))
    }
}

/// A crate's modules and the references between them.
#[derive(Debug, Default)]
struct Crate {
    modules: BTreeSet<ModPath>,
    references: Vec<Reference>,
}

/// The module path of a file, from its path relative to the crate's source
/// folder (`a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs` and `main.rs` are
/// the root).
fn module_of(relative: &str) -> ModPath {
    let mut parts: Vec<String> = relative.split('/').map(str::to_owned).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.strip_suffix(".rs").unwrap_or(&last).to_owned();
    let at_root = parts.is_empty();
    if !(stem == "mod" || (at_root && (stem == "lib" || stem == "main"))) {
        parts.push(stem);
    }
    parts
}

/// Builds the module graph of a crate from `(path, source)` pairs; `path`
/// is relative to the crate's source folder, `display_dir` is put in front
/// of it in messages.
fn analyze(files: &[(String, String)], display_dir: &str, crate_alias: Option<&str>) -> Crate {
    let mut modules = BTreeSet::new();
    let mut parsed = Vec::new();
    for (relative, src) in files {
        let module = module_of(relative);
        let shown = if display_dir.is_empty() {
            relative.clone()
        } else {
            format!("{display_dir}/{relative}")
        };
        let alias = if relative == "main.rs" {
            crate_alias
        } else {
            None
        };
        let p = parse(&shown, &module, src, alias);
        modules.insert(module);
        modules.extend(p.inline_modules.iter().cloned());
        parsed.push(p);
    }
    // Every ancestor of a module is a module too.
    for m in modules.clone() {
        for k in 0..m.len() {
            modules.insert(m[..k].to_vec());
        }
    }
    let paths: Vec<RawPath> = parsed.into_iter().flat_map(|p| p.paths).collect();

    // The names each module's `use` declarations bind, to their paths.
    let mut bindings: BTreeMap<ModPath, BTreeMap<String, RawPath>> = BTreeMap::new();
    for p in &paths {
        if let Some(name) = &p.binding {
            if !p.glob && !name.is_empty() && name != "_" {
                bindings
                    .entry(p.scope.clone())
                    .or_default()
                    .insert(name.clone(), p.clone());
            }
        }
    }
    let resolver = Resolver {
        modules: &modules,
        bindings: &bindings,
    };
    let mut references = Vec::new();
    for p in &paths {
        let Some(absolute) = resolver.absolute(p, 0) else {
            continue;
        };
        let to = resolver.module_of_path(&absolute, 0);
        references.push(Reference {
            file: p.file.clone(),
            line: p.line,
            from: p.scope.clone(),
            to,
            path: module_name(&absolute),
        });
    }
    Crate {
        modules,
        references,
    }
}

struct Resolver<'a> {
    modules: &'a BTreeSet<ModPath>,
    bindings: &'a BTreeMap<ModPath, BTreeMap<String, RawPath>>,
}

/// How many re-exports a path is followed through at most.
const MAX_HOPS: usize = 8;

impl Resolver<'_> {
    /// The path from the crate root; `None` for another crate's path.
    fn absolute(&self, p: &RawPath, hops: usize) -> Option<ModPath> {
        let mut out = match p.anchor {
            Anchor::Crate => Vec::new(),
            Anchor::SelfMod => p.scope.clone(),
            Anchor::Super(n) => p.scope[..p.scope.len().saturating_sub(n)].to_vec(),
            Anchor::Plain => {
                let first = p.segments.first()?;
                let mut child = p.scope.clone();
                child.push(first.clone());
                if self.modules.contains(&child) {
                    p.scope.clone()
                } else {
                    // A name an earlier `use` of this module bound (not this
                    // very declaration), or another crate.
                    let bound = self.bindings.get(&p.scope)?.get(first)?;
                    if hops >= MAX_HOPS || (bound.line == p.line && bound.file == p.file) {
                        return None;
                    }
                    let mut base = self.absolute(bound, hops + 1)?;
                    base.extend(p.segments[1..].iter().cloned());
                    return Some(base);
                }
            }
        };
        out.extend(p.segments.iter().cloned());
        Some(out)
    }

    /// The module an absolute path lands in: the longest known module prefix,
    /// following a re-export of the next segment when that module has one.
    fn module_of_path(&self, absolute: &[String], hops: usize) -> ModPath {
        let mut k = absolute.len();
        while k > 0 && !self.modules.contains(&absolute[..k].to_vec()) {
            k -= 1;
        }
        let module = absolute[..k].to_vec();
        if k == absolute.len() || hops >= MAX_HOPS {
            return module;
        }
        let name = &absolute[k];
        let Some(bound) = self.bindings.get(&module).and_then(|b| b.get(name)) else {
            return module;
        };
        match self.absolute(bound, hops + 1) {
            Some(mut target) => {
                target.extend(absolute[k + 1..].iter().cloned());
                self.module_of_path(&target, hops + 1)
            }
            // Re-exported from another crate: a dependency on this module.
            None => module,
        }
    }
}

// ---------------------------------------------------------------------------
// Rule (a): no cycles between sibling modules.
// ---------------------------------------------------------------------------

/// For each module with children: its children's dependency graph, each
/// edge with the references behind it.
fn sibling_graphs(
    krate: &Crate,
    references: &[&Reference],
) -> BTreeMap<ModPath, BTreeMap<String, BTreeMap<String, Vec<Reference>>>> {
    let mut graphs: BTreeMap<ModPath, BTreeMap<String, BTreeMap<String, Vec<Reference>>>> =
        BTreeMap::new();
    for r in references {
        // Siblings under every common ancestor of `from` and `to`.
        let common = r.from.iter().zip(&r.to).take_while(|(a, b)| a == b).count();
        if common < r.from.len() && common < r.to.len() {
            let parent = r.from[..common].to_vec();
            if krate.modules.contains(&parent) {
                graphs
                    .entry(parent)
                    .or_default()
                    .entry(r.from[common].clone())
                    .or_default()
                    .entry(r.to[common].clone())
                    .or_default()
                    .push((*r).clone());
            }
        }
    }
    graphs
}

/// The strongly connected components (with more than one node) of a graph.
fn cycles_in(graph: &BTreeMap<String, BTreeMap<String, Vec<Reference>>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = graph
        .iter()
        .flat_map(|(a, out)| std::iter::once(a).chain(out.keys()))
        .collect();
    let reaches = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for next in graph.get(&n).into_iter().flat_map(|o| o.keys()) {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reaches(n))).collect();
    let mut done = BTreeSet::new();
    let mut components = Vec::new();
    for n in &nodes {
        if done.contains(*n) || !reach[n].contains(*n) {
            continue;
        }
        let component: Vec<String> = nodes
            .iter()
            .filter(|m| reach[n].contains(**m) && reach[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        done.extend(component.iter().cloned());
        components.push(component);
    }
    components
}

/// One cycle through `component` starting at its first node, as a path
/// `a -> b -> … -> a`.
fn cycle_path(
    graph: &BTreeMap<String, BTreeMap<String, Vec<Reference>>>,
    component: &[String],
) -> Vec<String> {
    let start = &component[0];
    // Breadth-first from `start` back to `start`, within the component.
    let mut previous: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.clone()]);
    while let Some(n) = queue.pop_front() {
        for next in graph.get(&n).into_iter().flat_map(|o| o.keys()) {
            if !component.contains(next) {
                continue;
            }
            if next == start {
                let mut path = vec![start.clone(), n.clone()];
                let mut at = n.clone();
                while let Some(p) = previous.get(&at) {
                    path.push(p.clone());
                    at = p.clone();
                }
                path.reverse();
                return path;
            }
            if !previous.contains_key(next) && next != start {
                previous.insert(next.clone(), n.clone());
                queue.push_back(next.clone());
            }
        }
    }
    component.to_vec()
}

/// Every sibling cycle, with one reference per edge, as messages.
fn cycle_errors(krate: &Crate, references: &[&Reference]) -> Vec<String> {
    let mut errors = Vec::new();
    for (parent, graph) in sibling_graphs(krate, references) {
        for component in cycles_in(&graph) {
            let path = cycle_path(&graph, &component);
            let mut msg = format!(
                "import cycle among the children of {}: {}",
                module_name(&parent),
                path.join(" -> ")
            );
            if component.len() + 1 > path.len() {
                let _ = write!(
                    msg,
                    " (and more: {} all depend on each other)",
                    component.join(", ")
                );
            }
            for pair in path.windows(2) {
                if let Some(r) = graph.get(&pair[0]).and_then(|o| o.get(&pair[1])) {
                    let _ = write!(msg, "\n    {} -> {}: {}", pair[0], pair[1], r[0].site());
                }
            }
            errors.push(msg);
        }
    }
    errors
}

/// The keys of the references that take part in a sibling cycle.
fn keys_in_cycles(krate: &Crate, references: &[&Reference]) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for graph in sibling_graphs(krate, references).values() {
        for component in cycles_in(graph) {
            for (a, out) in graph {
                for (b, refs) in out {
                    if component.contains(a) && component.contains(b) {
                        keys.extend(refs.iter().map(Reference::key));
                    }
                }
            }
        }
    }
    keys
}

// ---------------------------------------------------------------------------
// Rule (b): the root crate's layers.
// ---------------------------------------------------------------------------

/// The layers of `src/`, lowest first; the crate root is above them all.
const LAYERS: &[&str] = &["telemetry", "core", "backend", "runtime", "edge", "ops"];

/// The engines' folder, which refers to nothing else of the crate.
const ENGINE: &[&str] = &["core", "engine"];

fn layer_rank(module: &[String]) -> Option<usize> {
    match module.first() {
        None => Some(LAYERS.len()),
        Some(top) => LAYERS.iter().position(|l| l == top),
    }
}

fn layer_name(module: &[String]) -> String {
    module.first().cloned().unwrap_or_else(|| "lib".to_owned())
}

fn under(module: &[String], prefix: &[&str]) -> bool {
    module.len() >= prefix.len() && module.iter().zip(prefix).all(|(a, b)| a == b)
}

/// A reference that breaks the layer rule, as `file:line: <layer> imports
/// <layer> (path)`.
fn layer_violation(r: &Reference) -> Option<String> {
    if r.from.is_empty() {
        return None;
    }
    let site = format!("{}:{}", r.file, r.line);
    if under(&r.from, ENGINE) && !under(&r.to, ENGINE) {
        let target = if r.to.first().map(String::as_str) == Some("core") && r.to.len() > 1 {
            format!("core::{}", r.to[1])
        } else {
            layer_name(&r.to)
        };
        return Some(format!(
            "{site}: core::engine imports {target} ({})",
            r.path
        ));
    }
    let Some(from) = layer_rank(&r.from) else {
        return Some(format!(
            "{site}: {} is not a layer ({}) ({})",
            layer_name(&r.from),
            LAYERS.join(" < "),
            r.path
        ));
    };
    match layer_rank(&r.to) {
        Some(to) if to <= from => None,
        _ => Some(format!(
            "{site}: {} imports {} ({})",
            layer_name(&r.from),
            layer_name(&r.to),
            r.path
        )),
    }
}

// ---------------------------------------------------------------------------
// Running the checks.
// ---------------------------------------------------------------------------

/// What the checks found in one crate.
#[derive(Debug, Default)]
struct Findings {
    errors: Vec<String>,
    /// Allowed entries that match nothing that breaks a rule any more.
    stale_allowances: Vec<String>,
}

/// Checks rule (a), and rule (b) with `layers`, subtracting the references
/// whose key is in `allowed`.
fn check(krate: &Crate, layers: bool, allowed: &[&str]) -> Findings {
    let allowed: BTreeSet<&str> = allowed.iter().copied().collect();
    let all: Vec<&Reference> = krate.references.iter().collect();
    let kept: Vec<&Reference> = all
        .iter()
        .copied()
        .filter(|r| !allowed.contains(r.key().as_str()))
        .collect();
    let mut errors = cycle_errors(krate, &kept);
    if layers {
        errors.extend(kept.iter().filter_map(|r| layer_violation(r)));
    }
    let mut breaking = keys_in_cycles(krate, &all);
    if layers {
        breaking.extend(
            all.iter()
                .filter(|r| layer_violation(r).is_some())
                .map(|r| r.key()),
        );
    }
    let stale_allowances = allowed
        .iter()
        .filter(|a| !breaking.contains(**a))
        .map(|a| (*a).to_owned())
        .collect();
    Findings {
        errors,
        stale_allowances,
    }
}

/// Every `.rs` file under `dir`, as (path relative to `dir`, source).
fn read_sources(dir: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .replace('\\', "/");
                let src = fs::read_to_string(&path).unwrap_or_default();
                out.push((relative, src));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// The analysis of the crate whose sources are in `dir` (relative to the
/// workspace root).
fn workspace_crate(dir: &str, crate_alias: Option<&str>) -> Crate {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = read_sources(&root.join(dir));
    assert!(!files.is_empty(), "no sources under {dir}");
    analyze(&files, dir, crate_alias)
}

fn assert_clean(name: &str, findings: &Findings) {
    assert!(
        findings.errors.is_empty(),
        "{name}: {} module rule violation(s):\n{}",
        findings.errors.len(),
        findings.errors.join("\n")
    );
}

/// Guards against a checker that sees nothing: a crate this size has many
/// references between its modules.
fn assert_sees_references(name: &str, krate: &Crate, at_least: usize) {
    let between = krate.references.iter().filter(|r| r.from != r.to).count();
    assert!(
        between >= at_least,
        "{name}: only {between} references between modules found; is the checker blind?"
    );
}

#[test]
fn the_sdk_modules_form_a_dag() {
    let krate = workspace_crate("clients/rust/src", None);
    assert_sees_references("huddle-client", &krate, 30);
    assert_clean("huddle-client", &check(&krate, false, &[]));
}

#[test]
fn the_loadtest_modules_form_a_dag() {
    let krate = workspace_crate("loadtest/src", None);
    assert_sees_references("huddle-loadtest", &krate, 20);
    assert_clean("huddle-loadtest", &check(&krate, false, &[]));
}

#[test]
fn the_schema_modules_form_a_dag() {
    let krate = workspace_crate("schema/src", None);
    assert_sees_references("huddle-schema", &krate, 5);
    assert_clean("huddle-schema", &check(&krate, false, &[]));
}

#[test]
fn the_root_crate_follows_its_layers() {
    let krate = workspace_crate("src", Some("huddle"));
    assert_sees_references("huddle", &krate, 50);
    let findings = check(&krate, true, KNOWN_VIOLATIONS);
    for stale in &findings.stale_allowances {
        println!("KNOWN_VIOLATIONS entry no longer occurs (delete it): {stale:?}");
    }
    assert_clean("huddle", &findings);
}

// ---------------------------------------------------------------------------
// The checker itself, on small inline crates.
// ---------------------------------------------------------------------------

fn inline_crate(files: &[(&str, &str)]) -> Crate {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(p, s)| ((*p).to_owned(), (*s).to_owned()))
        .collect();
    analyze(&files, "src", Some("app"))
}

fn edges(krate: &Crate) -> BTreeSet<(String, String)> {
    krate
        .references
        .iter()
        .filter(|r| r.from != r.to)
        .map(|r| (module_name(&r.from), module_name(&r.to)))
        .collect()
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

#[test]
fn a_cycle_between_siblings_is_found_with_its_path() {
    let krate = inline_crate(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("a.rs", "use crate::b::Thing;\npub fn f() {}\n"),
        (
            "b.rs",
            "pub struct Thing;\nfn g() {\n    crate::c::h();\n}\n",
        ),
        ("c.rs", "pub fn h() {\n    super::a::f();\n}\n"),
    ]);
    let findings = check(&krate, false, &[]);
    assert_eq!(findings.errors.len(), 1, "{:?}", findings.errors);
    let e = &findings.errors[0];
    assert!(e.contains("children of crate: a -> b -> c -> a"), "{e}");
    assert!(e.contains("a -> b: src/a.rs:1 (crate::b::Thing)"), "{e}");
    assert!(e.contains("b -> c: src/b.rs:3 (crate::c::h)"), "{e}");
    assert!(e.contains("c -> a: src/c.rs:2 (crate::a::f)"), "{e}");
}

#[test]
fn a_cycle_deeper_down_is_reported_under_its_parent() {
    let krate = inline_crate(&[
        ("lib.rs", "mod outer;\n"),
        ("outer/mod.rs", "mod x;\nmod y;\n"),
        ("outer/x.rs", "use super::y::Y;\npub struct X;\n"),
        (
            "outer/y.rs",
            "pub struct Y;\nimpl Y { fn x(&self) -> crate::outer::x::X { todo!() } }\n",
        ),
    ]);
    let findings = check(&krate, false, &[]);
    assert_eq!(findings.errors.len(), 1, "{:?}", findings.errors);
    assert!(
        findings.errors[0].contains("children of crate::outer: x -> y -> x"),
        "{:?}",
        findings.errors
    );
}

#[test]
fn a_child_referring_to_its_parent_is_not_a_cycle() {
    let krate = inline_crate(&[
        ("lib.rs", "mod net;\nmod util;\npub use net::Socket;\n"),
        // The parent uses its children, the children use the parent's items.
        ("net/mod.rs", "mod tcp;\nmod udp;\npub use tcp::Socket;\npub struct Config;\nuse udp::Datagram;\n"),
        ("net/tcp.rs", "use super::Config;\npub struct Socket(super::Config);\nuse crate::net::udp::Datagram;\n"),
        ("net/udp.rs", "use super::*;\npub struct Datagram;\nfn f(_: &Config) {}\n"),
        ("util.rs", "pub fn go() { let _ = crate::net::Config; }\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::util::go;\n}\n"),
    ]);
    assert_eq!(check(&krate, false, &[]).errors, Vec::<String>::new());
    let e = edges(&krate);
    assert!(e.contains(&pair("crate::net::tcp", "crate::net")), "{e:?}");
    assert!(
        e.contains(&pair("crate::net::tcp", "crate::net::udp")),
        "{e:?}"
    );
    assert!(e.contains(&pair("crate::util", "crate::net")), "{e:?}");
    assert!(
        e.contains(&pair("crate::util::tests", "crate::util")),
        "{e:?}"
    );
}

#[test]
fn comments_doc_comments_and_literals_are_ignored() {
    let krate = inline_crate(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        (
            "a.rs",
            r##"//! Unlike [`crate::b::B`], this module owns nothing.
// use crate::b::B;
/* crate::b::B /* nested crate::b::B */ still a comment: crate::b */
/// See [crate::b::B].
pub fn f() -> &'static str {
    let _quote = '"';
    let _escaped = '\'';
    let _lifetime_like: &'static str = "";
    let _s = "crate::b::B and \" crate::b::B";
    let _raw = r#"crate::b::B "quoted" crate::b"#;
    let _bytes = b"crate::b::B";
    "use crate::b;"
}
"##,
        ),
        ("b.rs", "pub struct B;\npub fn g() { crate::a::f(); }\n"),
    ]);
    assert_eq!(check(&krate, false, &[]).errors, Vec::<String>::new());
    assert_eq!(
        edges(&krate),
        BTreeSet::from([pair("crate::b", "crate::a")])
    );
}

#[test]
fn grouped_imports_and_re_exports_resolve_to_where_items_live() {
    let krate = inline_crate(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\npub use c::Deep;\n"),
        (
            "a.rs",
            "use crate::{b, c::{self, inner::Leaf as L}};\nuse crate::Deep;\nfn f() { b::g(); }\n",
        ),
        ("b.rs", "pub fn g() {}\n"),
        ("c/mod.rs", "pub mod inner;\npub use inner::Deep;\n"),
        ("c/inner.rs", "pub struct Leaf;\npub struct Deep;\n"),
    ]);
    let to: BTreeSet<String> = krate
        .references
        .iter()
        .filter(|r| r.file == "src/a.rs")
        .map(|r| module_name(&r.to))
        .collect();
    assert_eq!(
        to,
        BTreeSet::from([
            "crate::b".to_owned(),
            "crate::c".to_owned(),
            "crate::c::inner".to_owned(),
        ])
    );
}

#[test]
fn layer_violations_are_reported_and_known_ones_subtracted() {
    let krate = inline_crate(&[
        ("lib.rs", "pub mod core;\npub mod edge;\npub mod ops;\n"),
        ("main.rs", "use app::ops::run;\nfn main() { run(); }\n"),
        ("core/mod.rs", "pub mod engine;\npub mod wire;\n"),
        ("core/engine/mod.rs", "use crate::core::wire::Frame;\npub struct Engine;\n"),
        ("core/wire.rs", "pub struct Frame;\npub fn peer() -> crate::edge::Peer { todo!() }\n"),
        ("edge.rs", "pub struct Peer;\n"),
        (
            "ops.rs",
            "pub fn run() {\n    let _ = crate::edge::Peer;\n    let _ = crate::core::engine::Engine;\n}\n",
        ),
    ]);
    let findings = check(&krate, true, &[]);
    assert_eq!(
        findings.errors,
        vec![
            "src/core/engine/mod.rs:1: core::engine imports core::wire (crate::core::wire::Frame)"
                .to_owned(),
            "src/core/wire.rs:2: core imports edge (crate::edge::Peer)".to_owned(),
        ],
        "main.rs and the layers above may refer to anything below"
    );
    let known = [
        "src/core/engine/mod.rs -> crate::core::wire",
        "src/core/wire.rs -> crate::edge",
        "src/ops.rs -> crate::core::engine",
    ];
    let findings = check(&krate, true, &known);
    assert_eq!(findings.errors, Vec::<String>::new());
    assert_eq!(
        findings.stale_allowances,
        vec!["src/ops.rs -> crate::core::engine".to_owned()]
    );
}

#[test]
fn a_known_reference_that_closes_a_cycle_is_subtracted_too() {
    let krate = inline_crate(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "use crate::b::B;\npub struct A;\n"),
        ("b.rs", "pub struct B;\nuse crate::a::A;\n"),
    ]);
    assert_eq!(check(&krate, false, &[]).errors.len(), 1);
    let findings = check(&krate, false, &["src/b.rs -> crate::a"]);
    assert_eq!(findings.errors, Vec::<String>::new());
    assert_eq!(findings.stale_allowances, Vec::<String>::new());
}

#[test]
fn file_paths_map_to_module_paths() {
    assert_eq!(module_of("lib.rs"), Vec::<String>::new());
    assert_eq!(module_of("main.rs"), Vec::<String>::new());
    assert_eq!(module_of("a.rs"), vec!["a"]);
    assert_eq!(module_of("a/mod.rs"), vec!["a"]);
    assert_eq!(module_of("a/b.rs"), vec!["a", "b"]);
    assert_eq!(module_of("a/main.rs"), vec!["a", "main"]);
}
