//! pyro's tidy check: the house rules and the architecture invariants (ARCHITECTURE.md,
//! "Invariants"), read from the source tree so that breaking one fails `cargo test`.
//!
//! The checks are deliberately textual but token-aware: Rust files are split by the
//! compiler's own lexer, so a rule about code never fires on a comment and a rule about
//! comments never fires on a string. Crates are found through `cargo metadata`, so a rule
//! written for a crate applies the moment that crate joins the workspace; until then it is
//! reported as skipped ([`Report::missing`]), and `TIDY_STRICT=1` turns that into a failure.
//!
//! Run it with `cargo test -p tidy` (it is also part of `cargo test --workspace`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

pub mod lex;
mod rules;

pub use rules::Rule;

/// Known violations that another change in flight removes. Each entry excuses one rule in one
/// file, with the reason it is still there. A violation it excuses is reported but does not
/// fail; under `TIDY_STRICT=1` an entry that excuses nothing fails, so this list cannot
/// outlive the violations it names. Meant to be empty.
pub const ALLOWED: &[Allowed] = &[];

/// One entry of [`ALLOWED`].
#[derive(Debug)]
pub struct Allowed {
    /// The rule excused.
    pub rule: Rule,
    /// Repository-relative path of the one file excused.
    pub path: &'static str,
    /// Why the violation is still there, and what removes it.
    pub reason: &'static str,
}

/// A rule broken at one place.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// The rule broken.
    pub rule: Rule,
    /// Repository-relative path of the file (a `Cargo.toml` for rules about the crate graph).
    pub path: String,
    /// 1-based line, 0 when the violation is about the whole file.
    pub line: usize,
    /// What is wrong there.
    pub message: String,
}

/// The outcome of [`check`].
#[derive(Debug, Default)]
pub struct Report {
    /// Rules checked, in order.
    pub ran: Vec<Rule>,
    /// Rules (or parts of them) not checked because a crate they are about does not exist yet,
    /// with that crate's name.
    pub missing: Vec<(Rule, String)>,
    /// Violations that fail the check.
    pub violations: Vec<Violation>,
    /// Violations excused by an [`ALLOWED`] entry.
    pub allowed: Vec<(Violation, &'static Allowed)>,
    /// [`ALLOWED`] entries that excused nothing: the violation is gone, so is the entry's
    /// reason to exist.
    pub stale: Vec<&'static Allowed>,
}

impl Report {
    /// Whether the tree passes. Strict mode (`TIDY_STRICT=1`) also refuses rules skipped
    /// for a missing crate and stale [`ALLOWED`] entries.
    pub fn passed(&self, strict: bool) -> bool {
        self.violations.is_empty() && (!strict || (self.missing.is_empty() && self.stale.is_empty()))
    }

    /// A human-readable account: what ran, what was skipped or excused, what failed.
    pub fn render(&self, strict: bool) -> String {
        let mut out = String::new();
        for rule in &self.ran {
            let failed = self.violations.iter().filter(|v| v.rule == *rule).count();
            let status = if failed == 0 { "ok".to_string() } else { format!("FAILED ({failed})") };
            let _ = writeln!(out, "tidy: {:<34} {status}", rule.name());
        }
        for (rule, krate) in &self.missing {
            let what = if strict { "FAILED (TIDY_STRICT=1)" } else { "skipped" };
            let _ = writeln!(out, "tidy: {:<34} {what}: crate `{krate}` does not exist yet", rule.name());
        }
        for (v, allowed) in &self.allowed {
            let _ = writeln!(
                out,
                "tidy: allowed {}:{}: {} [{}] ({})",
                v.path,
                v.line,
                v.message,
                v.rule.name(),
                allowed.reason
            );
        }
        for entry in &self.stale {
            let what = if strict { "FAILED (TIDY_STRICT=1)" } else { "warning" };
            let _ = writeln!(
                out,
                "tidy: {what}: ALLOWED entry for {} in {} excuses nothing any more: remove it from crates/tidy/src/lib.rs",
                entry.rule.name(),
                entry.path
            );
        }
        for v in &self.violations {
            let _ = writeln!(out, "tidy: error: {}:{}: {} [{}]", v.path, v.line, v.message, v.rule.name());
        }
        out
    }
}

/// Runs every rule on the repository at `root` and sorts the violations against [`ALLOWED`].
pub fn check(root: &Path) -> io::Result<Report> {
    let tree = Tree::load(root)?;
    let mut report = Report::default();
    let mut found = Vec::new();
    for rule in Rule::ALL {
        report.ran.push(rule);
        let outcome = rules::run(rule, &tree);
        found.extend(outcome.violations);
        report.missing.extend(outcome.missing.into_iter().map(|c| (rule, c)));
    }
    apply_allow_list(&mut report, found, ALLOWED);
    Ok(report)
}

/// Moves excused violations aside and records the entries that excused nothing.
fn apply_allow_list(report: &mut Report, mut found: Vec<Violation>, allow: &'static [Allowed]) {
    found.sort();
    found.dedup();
    let mut used = vec![false; allow.len()];
    for v in found {
        match allow.iter().position(|a| a.rule == v.rule && a.path == v.path) {
            Some(i) => {
                used[i] = true;
                report.allowed.push((v, &allow[i]));
            }
            None => report.violations.push(v),
        }
    }
    report.stale = allow.iter().zip(used).filter(|(_, used)| !used).map(|(a, _)| a).collect();
}

/// A workspace member, as `cargo metadata` describes it.
#[derive(Debug)]
struct Package {
    name: String,
    /// Repository-relative directory (`crates/pyro`).
    dir: String,
    /// Repository-relative manifest path.
    manifest: String,
    has_lib: bool,
    dependencies: Vec<Dependency>,
}

/// One `[dependencies]`, `[dev-dependencies]` or `[build-dependencies]` entry.
#[derive(Debug)]
struct Dependency {
    /// The package name.
    name: String,
    /// The name the code uses (`package =` renames, `-` as `_`).
    crate_name: String,
    /// `normal`, `dev` or `build`.
    kind: String,
}

/// A file of the repository with its text.
#[derive(Debug)]
struct SourceFile {
    /// Repository-relative, `/`-separated.
    path: String,
    text: String,
}

/// Everything the rules read: the workspace members and the repository's text files.
#[derive(Debug)]
struct Tree {
    root: PathBuf,
    packages: Vec<Package>,
    files: Vec<SourceFile>,
    /// Every file name in the repository, for citations by bare name.
    file_names: BTreeSet<String>,
}

/// Extensions of the text files the rules read.
const TEXT_EXTENSIONS: &[&str] = &["rs", "toml", "sh", "py"];

impl Tree {
    fn load(root: &Path) -> io::Result<Tree> {
        let root = root.canonicalize()?;
        let packages = load_packages(&root)?;
        let mut files = Vec::new();
        let mut file_names = BTreeSet::new();
        // Build output, fuzz corpora and hidden directories (git's store, editors' and
        // virtualenvs' state) are not source; `.ci` is.
        let walk = walkdir::WalkDir::new(&root).sort_by_file_name().into_iter().filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            let skipped = matches!(name.as_ref(), "target" | "corpus") || (name.starts_with('.') && name != ".ci");
            e.depth() == 0 || !(e.file_type().is_dir() && skipped)
        });
        for entry in walk {
            let entry = entry.map_err(io::Error::other)?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = relative(&root, entry.path());
            file_names.insert(entry.file_name().to_string_lossy().into_owned());
            let ext = entry.path().extension().and_then(|e| e.to_str()).unwrap_or("");
            let is_script = rel.starts_with(".ci/");
            if TEXT_EXTENSIONS.contains(&ext) || is_script {
                let text = std::fs::read_to_string(entry.path())
                    .map_err(|e| io::Error::new(e.kind(), format!("reading {rel}: {e}")))?;
                files.push(SourceFile { path: rel, text });
            }
        }
        Ok(Tree { root, packages, files, file_names })
    }

    fn package(&self, name: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.name == name)
    }

    /// The Rust files under `dir/` (repository-relative; `""` is the whole repository),
    /// recursively.
    fn rust_files_under<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = &'a SourceFile> + 'a {
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        self.files.iter().filter(move |f| f.path.ends_with(".rs") && f.path.starts_with(&prefix))
    }
}

fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// The workspace members, from `cargo metadata --format-version 1 --no-deps`.
fn load_packages(root: &Path) -> io::Result<Vec<Package>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr))));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(io::Error::other)?;
    let field = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let mut packages = Vec::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let manifest = PathBuf::from(field(p, "manifest_path"));
        let dir = manifest.parent().map(|d| relative(root, d)).unwrap_or_default();
        let has_lib = p["targets"].as_array().into_iter().flatten().any(|t| {
            t["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| matches!(k.as_str(), Some("lib" | "rlib" | "dylib" | "proc-macro")))
        });
        let dependencies = p["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let name = field(d, "name");
                let crate_name = d["rename"].as_str().unwrap_or(&name).replace('-', "_");
                let kind = d["kind"].as_str().unwrap_or("normal").to_string();
                Dependency { name, crate_name, kind }
            })
            .collect();
        packages.push(Package {
            name: field(p, "name"),
            dir,
            manifest: relative(root, &manifest),
            has_lib,
            dependencies,
        });
    }
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(packages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(rule: Rule, path: &str) -> Violation {
        Violation { rule, path: path.into(), line: 1, message: "x".into() }
    }

    static TEST_ALLOW: &[Allowed] = &[
        Allowed { rule: Rule::NoDocHiddenPub, path: "a.rs", reason: "r" },
        Allowed { rule: Rule::NoDocHiddenPub, path: "gone.rs", reason: "r" },
    ];

    #[test]
    fn allow_list_excuses_only_its_rule_and_file_and_reports_stale_entries() {
        let mut report = Report::default();
        let found = vec![
            violation(Rule::NoDocHiddenPub, "a.rs"),
            violation(Rule::SafetyComments, "a.rs"),
            violation(Rule::NoDocHiddenPub, "b.rs"),
        ];
        apply_allow_list(&mut report, found, TEST_ALLOW);
        assert_eq!(report.allowed.len(), 1);
        assert_eq!(report.violations.len(), 2);
        assert_eq!(report.stale.len(), 1);
        assert_eq!(report.stale[0].path, "gone.rs");
        assert!(!report.passed(false));
    }

    #[test]
    fn strict_mode_refuses_stale_entries_and_missing_crates() {
        let mut report = Report::default();
        apply_allow_list(&mut report, vec![violation(Rule::NoDocHiddenPub, "a.rs")], &TEST_ALLOW[..1]);
        assert!(report.passed(false) && report.passed(true));
        report.missing.push((Rule::TreeRulesNeverTouchVm, "pyro-tree".into()));
        assert!(report.passed(false));
        assert!(!report.passed(true));
        let mut report = Report::default();
        apply_allow_list(&mut report, vec![], &TEST_ALLOW[..1]);
        assert!(report.passed(false));
        assert!(!report.passed(true));
    }
}
