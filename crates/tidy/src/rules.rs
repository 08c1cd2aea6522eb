//! The rules. Each detector works on text so it can be unit-tested on a snippet; `run` applies
//! it to the crates and files it is about.

use std::collections::{BTreeMap, BTreeSet};

use crate::lex::{lex, next_code, Token};
use crate::{Package, Tree, Violation};

/// A rule tidy enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// Only pyro-vmm names the supervisor socket, the QMP socket or a QMP command.
    VmControlOnlyInVmm,
    /// pyro-tree and pyro-diskimage neither depend on nor name pyro-vmm or pyro.
    TreeRulesNeverTouchVm,
    /// The product crate (pyro) never puts a VM file name into a path.
    ProductNeverBuildsVmPath,
    /// Workspace crates depend only on the crates below them in the layering, with no cycle.
    CrateLayering,
    /// Every `unsafe` block, impl and extern block has a `SAFETY:` comment, every `unsafe fn`
    /// a `# Safety` section.
    SafetyComments,
    /// No library crate has a `#[doc(hidden)] pub` item.
    NoDocHiddenPub,
    /// Every dependency a crate declares is named in that crate's sources.
    DependenciesUsed,
    /// Every document or repository path a comment cites exists in the repository.
    CitedDocumentsExist,
    /// Every workspace crate opts into the workspace lints (`[lints] workspace = true`), so
    /// `missing_docs` and `undocumented_unsafe_blocks` reach it.
    WorkspaceLintsInherited,
}

impl Rule {
    /// Every rule, in the order they run.
    pub const ALL: [Rule; 9] = [
        Rule::VmControlOnlyInVmm,
        Rule::TreeRulesNeverTouchVm,
        Rule::ProductNeverBuildsVmPath,
        Rule::CrateLayering,
        Rule::SafetyComments,
        Rule::NoDocHiddenPub,
        Rule::DependenciesUsed,
        Rule::CitedDocumentsExist,
        Rule::WorkspaceLintsInherited,
    ];

    /// Short stable name, as printed.
    pub fn name(self) -> &'static str {
        match self {
            Rule::VmControlOnlyInVmm => "vm-control-only-in-pyro-vmm",
            Rule::TreeRulesNeverTouchVm => "tree-rules-never-touch-a-vm",
            Rule::ProductNeverBuildsVmPath => "product-never-builds-a-vm-path",
            Rule::CrateLayering => "crate-layering",
            Rule::SafetyComments => "unsafe-has-safety-comment",
            Rule::NoDocHiddenPub => "no-doc-hidden-pub",
            Rule::DependenciesUsed => "dependencies-used",
            Rule::CitedDocumentsExist => "cited-documents-exist",
            Rule::WorkspaceLintsInherited => "workspace-lints-inherited",
        }
    }
}

/// The VM runtime crate: the one owner of a VM directory's files and of QMP.
const VMM: &str = "pyro-vmm";
/// The product crate.
const PRODUCT: &str = "pyro";
/// The pure crates that must work without any VM.
const TREE_CRATES: &[&str] = &["pyro-tree", "pyro-diskimage"];
/// The crates the tree crates must not know.
const VM_CRATES: &[&str] = &["pyro-vmm", "pyro"];

/// Names only the VM runtime may use: the supervisor's and QEMU monitor's sockets, and QMP
/// commands (the handshake, human-monitor passthrough, port forwarding).
const VM_CONTROL_NAMES: &[&str] =
    &["supervisor.sock", "qmp.sock", "qmp_capabilities", "human-monitor-command", "hostfwd_add", "hostfwd_remove"];

/// The files of a VM directory (today the constants at the top of `supervisor.rs` and
/// `qmp.rs`): the product layer reaches them through the runtime's types, never by name.
const VM_FILE_NAMES: &[&str] = &[
    "launch.json",
    "supervisor.sock",
    "supervisor.json",
    "supervisor.log",
    "console.log",
    "vmm.log",
    "agent.sock",
    "qmp.sock",
    "published.json",
];

/// The layering: the workspace crates each crate may depend on (any kind of dependency).
/// A crate missing from this table is a violation: place it in the graph when adding it.
const LAYERS: &[(&str, &[&str])] = &[
    ("pyro-sys", &[]),
    ("pyro-protocol", &["pyro-sys"]),
    ("pyro-tree", &["pyro-sys", "pyro-protocol"]),
    ("pyro-diskimage", &["pyro-sys", "pyro-protocol", "pyro-tree"]),
    ("pyro-vmm", &["pyro-sys", "pyro-protocol", "pyro-tree"]),
    // OCI registry client and tar layers: no pyro crate below it, so it can be tested alone.
    ("pyro-oci", &[]),
    ("pyro", &["pyro-sys", "pyro-protocol", "pyro-tree", "pyro-diskimage", "pyro-vmm", "pyro-oci"]),
    ("pyro-mcp", &["pyro"]),
    // Client config for `pyro mcp serve`: the profile names from the MCP server, atomic writes.
    ("pyro-host", &["pyro-sys", "pyro-mcp"]),
    // `pyro mcp serve` hands over to the MCP server; `pyro host` to pyro-host.
    ("pyro-cli", &["pyro", "pyro-mcp", "pyro-host"]),
    // The Python SDK: the engine in-process, and `create_server` hands over to the MCP server.
    ("pyro-py", &["pyro", "pyro-mcp"]),
    ("pyro-agent", &["pyro-sys", "pyro-protocol", "pyro-tree"]),
    ("tidy", &[]),
];

/// Top-level directories whose paths, cited in a comment, must exist. `docs/` and `shared/`
/// are listed because comments have cited them; `shared/` is outside the repository.
const CITED_DIRS: &[&str] = &["crates/", "scripts/", "fuzz/", "docs/", "shared/", ".ci/"];
/// Documents cited by bare name in comments of the past, none of which is in the repository.
const CITED_BARE_NAMES: &[&str] = &["REFERENCE", "CONTRACT"];

/// What one rule found.
#[derive(Default)]
pub(crate) struct Outcome {
    pub violations: Vec<Violation>,
    /// Crates the rule is about that do not exist.
    pub missing: Vec<String>,
}

/// A detector's finding in one file.
#[derive(Debug, PartialEq, Eq)]
struct Finding {
    line: usize,
    message: String,
}

pub(crate) fn run(rule: Rule, tree: &Tree) -> Outcome {
    let mut out = Outcome::default();
    let this_crate = env!("CARGO_PKG_NAME");
    let scan = |out: &mut Outcome, dir: &str, detect: &dyn Fn(&str) -> Vec<Finding>| {
        for file in tree.rust_files_under(dir) {
            for f in detect(&file.text) {
                out.violations.push(Violation { rule, path: file.path.clone(), line: f.line, message: f.message });
            }
        }
    };
    match rule {
        Rule::VmControlOnlyInVmm => {
            if tree.package(VMM).is_none() {
                out.missing.push(VMM.into());
            }
            // Shipped code only: integration tests check from outside that the VM's files
            // are private and cleaned up, which is not touching them. The checker itself
            // names everything it looks for.
            for p in tree.packages.iter().filter(|p| p.name != VMM && p.name != this_crate) {
                scan(&mut out, &format!("{}/src", p.dir), &vm_control_mentions);
                if let Some(build) = tree.files.iter().find(|f| f.path == format!("{}/build.rs", p.dir)) {
                    for f in vm_control_mentions(&build.text) {
                        out.violations.push(Violation {
                            rule,
                            path: build.path.clone(),
                            line: f.line,
                            message: f.message,
                        });
                    }
                }
            }
        }
        Rule::TreeRulesNeverTouchVm => {
            for name in TREE_CRATES {
                let Some(p) = tree.package(name) else {
                    out.missing.push((*name).into());
                    continue;
                };
                for d in p.dependencies.iter().filter(|d| VM_CRATES.contains(&d.name.as_str())) {
                    out.violations.push(Violation {
                        rule,
                        path: p.manifest.clone(),
                        line: 0,
                        message: format!("{} depends on {} ({} dependency)", p.name, d.name, d.kind),
                    });
                }
                scan(&mut out, &p.dir, &|src| names_crates(src, VM_CRATES));
            }
        }
        Rule::ProductNeverBuildsVmPath => match tree.package(PRODUCT) {
            Some(p) => scan(&mut out, &format!("{}/src", p.dir), &vm_path_literals),
            None => out.missing.push(PRODUCT.into()),
        },
        Rule::CrateLayering => {
            out.violations = layering(&tree.packages, LAYERS, rule);
            out.missing = LAYERS
                .iter()
                .filter(|(name, _)| tree.package(name).is_none())
                .map(|(name, _)| (*name).into())
                .collect();
        }
        Rule::SafetyComments => scan(&mut out, "", &unsafe_without_safety),
        Rule::NoDocHiddenPub => {
            for p in tree.packages.iter().filter(|p| p.has_lib) {
                scan(&mut out, &format!("{}/src", p.dir), &doc_hidden_pub);
            }
        }
        Rule::DependenciesUsed => {
            for p in &tree.packages {
                out.violations.extend(unused_dependencies(tree, p));
            }
        }
        Rule::WorkspaceLintsInherited => {
            for p in &tree.packages {
                let manifest = std::fs::read_to_string(tree.root.join(&p.manifest)).unwrap_or_default();
                if !inherits_workspace_lints(&manifest) {
                    out.violations.push(Violation {
                        rule,
                        path: p.manifest.clone(),
                        line: 0,
                        message: format!(
                            "{} does not inherit the workspace lints: add `[lints]` `workspace = true`",
                            p.name
                        ),
                    });
                }
            }
        }
        Rule::CitedDocumentsExist => {
            for file in &tree.files {
                for f in missing_citations(tree, &file.path, &file.text) {
                    out.violations.push(Violation { rule, path: file.path.clone(), line: f.line, message: f.message });
                }
            }
        }
    }
    out
}

/// Does a manifest have a `[lints]` table with `workspace = true`?
fn inherits_workspace_lints(manifest: &str) -> bool {
    let mut in_lints = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_lints = line == "[lints]";
        } else if in_lints && line.replace(' ', "") == "workspace=true" {
            return true;
        }
    }
    false
}

/// String literals that name the supervisor socket, the QMP socket or a QMP command.
fn vm_control_mentions(src: &str) -> Vec<Finding> {
    let mut found = Vec::new();
    for t in lex(src) {
        let Some(content) = t.string_content() else { continue };
        for name in VM_CONTROL_NAMES.iter().filter(|n| content.contains(*n)) {
            found.push(Finding { line: t.line, message: format!("names `{name}`, which only pyro-vmm may use") });
        }
    }
    found
}

/// String literals that are a VM file name or a path ending in one, and `join` calls whose
/// argument comes from pyro-vmm: both build a path into a VM directory.
fn vm_path_literals(src: &str) -> Vec<Finding> {
    let tokens = lex(src);
    let mut found = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if let Some(content) = t.string_content() {
            let last = content.rsplit(['/', '}']).next().unwrap_or(content);
            if let Some(name) = VM_FILE_NAMES.iter().find(|n| **n == last) {
                found.push(Finding {
                    line: t.line,
                    message: format!("builds a path to the VM file `{name}`: ask pyro-vmm's types instead"),
                });
            }
        }
        if t.is_ident("join") && i > 0 && tokens[i - 1].text == "." {
            let open = next_code(&tokens, i).filter(|&j| tokens[j].text == "(");
            let arg = open.and_then(|j| next_code(&tokens, j));
            if arg.is_some_and(|a| tokens[a].is_ident("pyro_vmm")) {
                found.push(Finding { line: t.line, message: "joins a pyro-vmm name onto a path".into() });
            }
        }
    }
    found
}

/// Code (not comments) naming one of `crates` (as `pyro_vmm`, `pyro`, ...).
fn names_crates(src: &str, crates: &[&str]) -> Vec<Finding> {
    let idents: Vec<String> = crates.iter().map(|c| c.replace('-', "_")).collect();
    let mut found = Vec::new();
    for t in lex(src) {
        if let Some(name) = idents.iter().find(|n| t.is_ident(n)) {
            found.push(Finding { line: t.line, message: format!("names `{name}`: tree rules never touch a VM") });
        }
        if let Some(content) = t.string_content() {
            // A path (`"pyro::x"`) or a crate name that cannot be an ordinary word.
            let mut names = crates.iter().copied().chain(idents.iter().map(String::as_str));
            let names_it =
                |n: &&str| content.starts_with(&format!("{n}::")) || (content == *n && n.contains(['-', '_']));
            if let Some(name) = names.find(names_it) {
                found.push(Finding { line: t.line, message: format!("names `{name}`: tree rules never touch a VM") });
            }
        }
    }
    found
}

/// `unsafe` blocks, impls and extern blocks without a `SAFETY:` comment just above (or on
/// the same line), and `unsafe fn`s without a `# Safety` doc section or `SAFETY:` comment.
fn unsafe_without_safety(src: &str) -> Vec<Finding> {
    let tokens = lex(src);
    let lines: Vec<&str> = src.lines().collect();
    let mut found = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if !t.is_ident("unsafe") {
            continue;
        }
        let Some(next) = next_code(&tokens, i) else { continue };
        let what = match tokens[next].text {
            "{" => "block",
            "impl" => "impl",
            "extern" => "extern block",
            // An item, not a function pointer type (`unsafe fn()`).
            "fn" if next_code(&tokens, next).is_some_and(|n| tokens[n].kind == ra_ap_rustc_lexer::TokenKind::Ident) => {
                "fn"
            }
            _ => continue, // `unsafe(...)` attributes, `unsafe` in a fn pointer type
        };
        let marker = if what == "fn" { ["# Safety", "SAFETY:"] } else { ["SAFETY:", "SAFETY:"] };
        let comment = comment_above(&lines, t.line);
        let same_line = lines.get(t.line - 1).copied().unwrap_or("");
        let trailing = same_line.find("//").map(|c| &same_line[c..]).unwrap_or("");
        if !marker.iter().any(|m| comment.contains(m) || trailing.contains(m)) {
            found.push(Finding { line: t.line, message: format!("unsafe {what} without a `SAFETY:` comment") });
        }
    }
    found
}

/// The comments directly above line `line` (1-based), skipping attributes; when the line
/// continues a statement begun above (`let x =` or `f(a,` then `unsafe {` on the next
/// line), the comments above that statement's start, as clippy reads them.
fn comment_above(lines: &[&str], line: usize) -> String {
    let mut text = String::new();
    let mut i = line - 1; // index of the line itself
    let mut continuation_lines = 0;
    while i > 0 {
        let above = lines[i - 1].trim();
        let is_comment = above.starts_with("//") || above.starts_with("/*") || above.starts_with('*');
        if is_comment || above.starts_with("#[") {
            text.push_str(above);
            text.push('\n');
        } else if !text.is_empty() || above.is_empty() || above.ends_with([';', '{', '}']) || continuation_lines == 8 {
            // The comment block ended, or the statement started on the line below.
            break;
        } else {
            continuation_lines += 1;
        }
        i -= 1;
    }
    text
}

/// `pub` items marked `#[doc(hidden)]`.
fn doc_hidden_pub(src: &str) -> Vec<Finding> {
    let tokens = lex(src);
    let code: Vec<&Token<'_>> = tokens.iter().filter(|t| !t.is_trivia()).collect();
    let texts: Vec<&str> = code.iter().map(|t| t.text).collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 7 <= code.len() {
        if texts[i..i + 7] == ["#", "[", "doc", "(", "hidden", ")", "]"] {
            let line = code[i].line;
            // Skip further outer attributes to reach the item.
            let mut j = i + 7;
            while j + 1 < code.len() && texts[j] == "#" && texts[j + 1] == "[" {
                let mut depth = 0;
                j += 1;
                while j < code.len() {
                    match texts[j] {
                        "[" => depth += 1,
                        "]" => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                j += 1;
            }
            let is_pub = texts.get(j) == Some(&"pub") && texts.get(j + 1) != Some(&"(");
            if is_pub {
                found.push(Finding {
                    line,
                    message: "`#[doc(hidden)] pub` item: keep internals private to their crate".into(),
                });
            }
            i = j;
        } else {
            i += 1;
        }
    }
    found
}

/// Whether `src` names the crate `crate_name` in code: as an identifier (`use x::`, `x::f()`),
/// or in a string (`#[serde(with = "x")]`).
fn names_crate(src: &str, crate_name: &str) -> bool {
    lex(src).iter().any(|t| {
        t.is_ident(crate_name)
            || t.string_content().is_some_and(|c| c == crate_name || c.starts_with(&format!("{crate_name}::")))
    })
}

/// Dependencies of `p` that none of its sources names: normal and dev dependencies are
/// looked for in every Rust file of the crate, build dependencies in `build.rs`.
fn unused_dependencies(tree: &Tree, p: &Package) -> Vec<Violation> {
    let files: Vec<_> = tree.rust_files_under(&p.dir).collect();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for d in &p.dependencies {
        if !seen.insert((d.crate_name.clone(), d.kind.clone())) {
            continue;
        }
        let used = files
            .iter()
            .filter(|f| d.kind != "build" || f.path == format!("{}/build.rs", p.dir))
            .any(|f| names_crate(&f.text, &d.crate_name));
        if !used {
            out.push(Violation {
                rule: Rule::DependenciesUsed,
                path: p.manifest.clone(),
                line: 0,
                message: format!("{} dependency `{}` of {} is never used", d.kind, d.name, p.name),
            });
        }
    }
    out
}

/// Checks the workspace graph against `layers`: unknown crates, edges the table does not
/// allow, and cycles (over every kind of dependency).
fn layering(packages: &[Package], layers: &[(&str, &[&str])], rule: Rule) -> Vec<Violation> {
    let members: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut out = Vec::new();
    for p in packages {
        let allowed = layers.iter().find(|(name, _)| *name == p.name).map(|(_, deps)| *deps);
        if allowed.is_none() {
            out.push(Violation {
                rule,
                path: p.manifest.clone(),
                line: 0,
                message: format!(
                    "{} is not in tidy's layering table: add it to LAYERS in crates/tidy/src/rules.rs",
                    p.name
                ),
            });
        }
        for d in p.dependencies.iter().filter(|d| members.contains(d.name.as_str())) {
            graph.entry(p.name.as_str()).or_default().insert(d.name.as_str());
            if let Some(allowed) = allowed {
                if !allowed.contains(&d.name.as_str()) {
                    out.push(Violation {
                        rule,
                        path: p.manifest.clone(),
                        line: 0,
                        message: format!(
                            "{} may not depend on {} ({} dependency); it may use: {}",
                            p.name,
                            d.name,
                            d.kind,
                            if allowed.is_empty() { "no workspace crate".to_string() } else { allowed.join(", ") }
                        ),
                    });
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        let manifest = packages.iter().find(|p| p.name == cycle[0]).map(|p| p.manifest.clone()).unwrap_or_default();
        out.push(Violation {
            rule,
            path: manifest,
            line: 0,
            message: format!("dependency cycle: {}", cycle.join(" -> ")),
        });
    }
    out
}

/// A cycle in `graph` as the list of its nodes (first repeated at the end), if there is one.
fn find_cycle<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        done: &mut BTreeSet<&'a str>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(start) = path.iter().position(|n| *n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

/// The comments of a file: Rust comments by the lexer, `#` comments of TOML, shell and
/// Python files by line (a `#` at the start or after whitespace).
fn comments(path: &str, text: &str) -> Vec<(usize, String)> {
    if path.ends_with(".rs") {
        return lex(text).iter().filter(|t| t.is_comment()).map(|t| (t.line, t.text.to_string())).collect();
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let start = line.char_indices().find(|&(i, c)| c == '#' && (i == 0 || line[..i].ends_with([' ', '\t'])));
        if let Some((i, _)) = start {
            if !line[i..].starts_with("#!") {
                out.push((n + 1, line[i..].to_string()));
            }
        }
    }
    out
}

/// The documents and repository paths a comment cites: Markdown file names, file paths under a
/// top-level directory of [`CITED_DIRS`] (any path under `docs/` and `shared/`), and the bare
/// names of [`CITED_BARE_NAMES`].
fn citations(comment: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in comment.split(|c: char| c.is_whitespace() || "`'\"()[]<>,;".contains(c)) {
        let word = word.trim_end_matches(['.', ':', '!', '?']);
        // `path:line` and `path#anchor` cite `path`.
        let word = word.split('#').next().unwrap_or("");
        let word = match word.rsplit_once(':') {
            Some((path, line)) if line.chars().all(|c| c.is_ascii_digit()) => path,
            _ => word,
        };
        if word.is_empty() || word.contains(['*', '{', '$', '|']) {
            continue;
        }
        let file_name = word.rsplit('/').next().unwrap_or(word);
        // A document has a name before `.md`; a path under a repository directory is cited
        // when it names a file (generated directories such as `fuzz/artifacts/` are not).
        let cited = (word.ends_with(".md") && file_name.len() > 3)
            || CITED_DIRS.iter().any(|d| {
                word.starts_with(d)
                    && word.len() > d.len()
                    && (file_name.contains('.') || matches!(*d, "docs/" | "shared/"))
            })
            || CITED_BARE_NAMES
                .iter()
                .any(|n| word == *n || word.strip_prefix(n).is_some_and(|rest| rest.starts_with('.')));
        if cited {
            out.push(word.to_string());
        }
    }
    out
}

/// Citations in the comments of `path` that name nothing in the repository. A path resolves
/// against the repository root or the citing file's directory; a bare file name may be any
/// file of the repository.
fn missing_citations(tree: &Tree, path: &str, text: &str) -> Vec<Finding> {
    let dir = std::path::Path::new(path).parent().unwrap_or(std::path::Path::new(""));
    let mut found = Vec::new();
    for (line, comment) in comments(path, text) {
        for cited in citations(&comment) {
            let exists = tree.root.join(&cited).exists()
                || tree.root.join(dir).join(&cited).exists()
                || (!cited.contains('/')
                    && tree.file_names.iter().any(|f| *f == cited || f.split('.').next() == Some(&cited)));
            if !exists {
                found.push(Finding {
                    line,
                    message: format!("comment cites `{cited}`, which is not in the repository"),
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(found: Vec<Finding>) -> Vec<usize> {
        found.into_iter().map(|f| f.line).collect()
    }

    #[test]
    fn vm_control_names_count_in_strings_not_comments() {
        let src = "// the supervisor listens on supervisor.sock\nconst S: &str = \"supervisor.sock\";\nfn f() { send(b\"{\\\"execute\\\":\\\"qmp_capabilities\\\"}\"); send(&format!(\"hostfwd_add net0 {r}\")); }\n";
        assert_eq!(lines(vm_control_mentions(src)), [2, 3, 3]);
        assert!(vm_control_mentions("let agent = dir.join(\"agent.sock\");").is_empty());
    }

    #[test]
    fn vm_paths_are_file_name_literals_and_joins_of_runtime_names() {
        let src = "let a = dir.join(\"console.log\");\nlet b = format!(\"{dir}/launch.json\");\nlet c = vm.join(pyro_vmm::SOCKET);\nlet d = \"console.log is where the guest writes\";\nlet e = dir.join(\"workspace.json\");\n";
        assert_eq!(lines(vm_path_literals(src)), [1, 2, 3]);
    }

    #[test]
    fn tree_crates_may_mention_the_product_in_comments_only() {
        let src = "//! Used by `pyro` and pyro-agent.\nuse pyro_vmm::Machine;\nfn f() -> pyro::Error { todo!() }\nlet p = pyro_tree::x();\nconst USER: &str = \"pyro\";\nconst C: &str = \"pyro-vmm\";\n";
        assert_eq!(lines(names_crates(src, VM_CRATES)), [2, 3, 6]);
    }

    #[test]
    fn unsafe_needs_a_safety_comment_above_its_statement() {
        let ok = "// SAFETY: plain integers.\nlet r = unsafe { kill(1, 0) };\n// SAFETY: the fd is ours.\nlet rc =\n    unsafe { close(fd) };\n// SAFETY: two lines\n// of reasons.\n#[allow(unused)]\nunsafe impl Send for X {}\n/// # Safety\n/// The caller owns `fd`.\npub unsafe fn f(fd: i32) {}\nlet f: unsafe fn() = g; // \"unsafe { }\" in a string is not code\nlet x = unsafe { y() }; // SAFETY: trailing\n// SAFETY: the pointer is ours.\nlet rc = call(\n    a,\n    unsafe { p.read() },\n);\n";
        assert!(unsafe_without_safety(ok).is_empty(), "{:?}", unsafe_without_safety(ok));
        let bad = "let r = unsafe { kill(1, 0) };\n// Kill it.\nunsafe { kill(1, 9) }\n/// Does things.\nunsafe fn f() {}\n// SAFETY: unrelated\n\nunsafe impl Sync for X {}\n// SAFETY: for the statement above only.\nlet a = 1;\nlet b = f(\n    unsafe { g() },\n);\n";
        assert_eq!(lines(unsafe_without_safety(bad)), [1, 3, 5, 8, 12]);
    }

    #[test]
    fn doc_hidden_pub_items_are_found_through_other_attributes() {
        let src = "#[doc(hidden)]\npub mod a;\n#[doc(hidden)]\n#[allow(dead_code)]\npub fn b() {}\n#[doc(hidden)]\nfn private() {}\n#[doc(hidden)]\npub(crate) fn c() {}\n// #[doc(hidden)] pub in a comment\n";
        assert_eq!(lines(doc_hidden_pub(src)), [1, 3]);
    }

    #[test]
    fn a_crate_is_named_by_identifier_or_serde_string() {
        assert!(names_crate("use serde_json::Value;", "serde_json"));
        assert!(names_crate("#[serde(with = \"serde_bytes\")] data: Vec<u8>,", "serde_bytes"));
        assert!(names_crate("#[tokio::main] async fn main() {}", "tokio"));
        assert!(!names_crate("// anyhow would be nice\nlet s = \"anyhow is nice\"; let anyhow_x = 1;", "anyhow"));
    }

    #[test]
    fn cycles_are_found_and_the_table_is_enforced() {
        let dep = |name: &str| crate::Dependency {
            name: name.into(),
            crate_name: name.replace('-', "_"),
            kind: "normal".into(),
        };
        let pkg = |name: &str, deps: &[&str]| Package {
            name: name.into(),
            dir: format!("crates/{name}"),
            manifest: format!("crates/{name}/Cargo.toml"),
            has_lib: true,
            dependencies: deps.iter().map(|d| dep(d)).collect(),
        };
        let good = [pkg("pyro-sys", &["libc"]), pkg("pyro", &["pyro-sys", "serde"]), pkg("pyro-cli", &["pyro"])];
        let table: &[(&str, &[&str])] = &[("pyro-sys", &[]), ("pyro", &["pyro-sys"]), ("pyro-cli", &["pyro"])];
        assert!(layering(&good, table, Rule::CrateLayering).is_empty());
        let bad =
            [pkg("pyro-sys", &["pyro-cli"]), pkg("pyro", &["pyro-sys"]), pkg("pyro-cli", &["pyro"]), pkg("new", &[])];
        let messages: Vec<String> = layering(&bad, table, Rule::CrateLayering).into_iter().map(|v| v.message).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        for expected in [
            "new is not in tidy's layering table",
            "pyro-sys may not depend on pyro-cli",
            "cycle: pyro -> pyro-sys -> pyro-cli -> pyro",
        ] {
            assert!(messages.iter().any(|m| m.contains(expected)), "{expected}: {messages:?}");
        }
    }

    #[test]
    fn citations_are_document_names_and_repository_paths() {
        let comment = "// See REFERENCE §3, `crates/pyro/tests/contract.rs:12`, SPECIFICATION.md (Limits), shared/notes/x.md and docs/a.md#b; not crates/*/Cargo.toml, fuzz/artifacts/, .md files or a/b.txt.";
        assert_eq!(
            citations(comment),
            ["REFERENCE", "crates/pyro/tests/contract.rs", "SPECIFICATION.md", "shared/notes/x.md", "docs/a.md"]
        );
        assert_eq!(
            comments("x.sh", "#!/bin/sh\necho a#b # see CONTRACT.md\n# top\n"),
            [(2, "# see CONTRACT.md".to_string()), (3, "# top".to_string())]
        );
    }

    #[test]
    fn lints_table_must_inherit_the_workspace() {
        assert!(inherits_workspace_lints("[package]\nname = \"x\"\n\n[lints]\nworkspace = true\n"));
        assert!(!inherits_workspace_lints("[package]\nname = \"x\"\nworkspace = true\n"));
        assert!(!inherits_workspace_lints("[lints]\n[features]\nworkspace = true\n"));
    }
}
