//! Projects: the host tree a workspace is seeded from when the caller names no `seed_path`.
//!
//! `pyro mcp serve` resolves one project at start ([`Project::resolve`]): `--project-path DIR`,
//! `--repo-url URL [--repo-ref REF]`, or (with neither) the Git checkout around the server's
//! working directory. `create_workspace` then seeds from it ([`CreateWorkspaceOptions::project`](
//! crate::workspace::CreateWorkspaceOptions::project)).
//!
//! A Git checkout is seeded by Git's rules, not by copying the directory: the files Git
//! tracks (`git ls-files`), plus untracked files that are not ignored when asked. So ignored
//! build output is never read, `.git` is not copied, and a listed path that cannot be archived
//! (a socket, a fifo, an unreadable file, a file deleted but not committed) is skipped with a
//! reason in the payload instead of failing the seed. The content is the working tree's (the
//! user's uncommitted edits included); `origin_ref` is the `HEAD` commit it sits on.
//!
//! A repository URL is cloned once, when the project is resolved (so a bad URL or ref stops
//! the server at start, with the reason, before any client relies on it; and every workspace
//! of that server seeds from the same commit). The clone lives in a private directory under
//! `$PYRO_HOME/projects/`, removed when the last handle to the project is dropped; clones of
//! processes that died without cleaning up are removed by the next clone.
//!
//! Git is the host's `git` command (installed with pyro's host dependencies), run with every
//! `GIT_*` variable of the caller's environment removed and without a terminal prompt.

use crate::{Error, Result};
use pyro_tree::listed::{self, Skipped};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// Where a seed came from: the `origin_kind` of a workspace's seed payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginKind {
    /// Nothing was seeded.
    Empty,
    /// A plain host directory or archive.
    Path,
    /// A Git checkout on the host, seeded by Git's rules.
    GitCheckout,
    /// A repository cloned from a URL.
    RepoUrl,
}

impl OriginKind {
    /// The payload string: `empty`, `path`, `git_checkout` or `repo_url`.
    pub fn as_str(self) -> &'static str {
        match self {
            OriginKind::Empty => "empty",
            OriginKind::Path => "path",
            OriginKind::GitCheckout => "git_checkout",
            OriginKind::RepoUrl => "repo_url",
        }
    }
}

/// How the operator chose the project (`pyro mcp serve` flags).
#[derive(Debug, Clone, Default)]
pub struct ProjectChoice {
    /// `--project-path DIR`: this directory (a Git checkout is seeded by Git's rules).
    pub project_path: Option<PathBuf>,
    /// `--repo-url URL`: clone this repository (any URL `git clone` takes).
    pub repo_url: Option<String>,
    /// `--repo-ref REF`: branch, tag or commit of `repo_url` (default: its default branch).
    pub repo_ref: Option<String>,
    /// `--project-include-untracked`: also seed untracked files Git does not ignore.
    pub include_untracked: bool,
    /// `--no-project`: no project even inside a Git checkout.
    pub no_project: bool,
}

/// A project workspaces are seeded from. Cheap to clone; a cloned repository's directory is
/// removed when the last clone of this handle is dropped.
#[derive(Debug, Clone)]
pub struct Project {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    kind: OriginKind,
    /// The directory seeded from (for a URL, the private clone).
    root: PathBuf,
    /// What the payload shows as `seed_path`: the root, or the URL without credentials.
    shown: String,
    include_untracked: bool,
    /// The private clone: held only so that it is removed when the project is dropped.
    _clone: Option<CloneDir>,
}

/// What a project seed produced (the engine turns it into the `workspace_seed` payload).
pub(crate) struct ProjectSeed {
    pub tar: Vec<u8>,
    pub seed_path: String,
    pub origin_kind: OriginKind,
    pub origin_ref: Option<String>,
    pub skipped: Vec<Skipped>,
}

impl Project {
    /// The project the flags choose; with none of them, the Git checkout containing `cwd`
    /// (`None` outside a checkout). Clones a `repo_url` now, under `home/projects/`.
    pub fn resolve(choice: &ProjectChoice, cwd: &Path, home: &Path) -> Result<Option<Project>> {
        if choice.no_project {
            return Ok(None);
        }
        if choice.repo_ref.is_some() && choice.repo_url.is_none() {
            return Err(Error::InvalidInput("--repo-ref needs --repo-url".into()));
        }
        match (&choice.project_path, &choice.repo_url) {
            (Some(_), Some(_)) => {
                Err(Error::InvalidInput("--project-path and --repo-url are two different projects; pass one".into()))
            }
            (Some(dir), None) => Project::from_path(dir, choice.include_untracked).map(Some),
            (None, Some(url)) => {
                if choice.include_untracked {
                    return Err(Error::InvalidInput(
                        "--project-include-untracked applies to a local checkout; a cloned repository has no untracked files"
                            .into(),
                    ));
                }
                Project::clone_repo(home, url, choice.repo_ref.as_deref()).map(Some)
            }
            (None, None) => Project::discover(cwd, choice.include_untracked),
        }
    }

    /// A directory as the project: a Git checkout (or a directory inside one) is seeded by
    /// Git's rules (the files below `dir` only), any other directory is copied whole.
    pub fn from_path(dir: &Path, include_untracked: bool) -> Result<Project> {
        let shown = dir.display();
        let hint = "pass --project-path a directory the user running pyro can read";
        let abs = std::path::absolute(dir)
            .map_err(|e| Error::InvalidInput(format!("project path {shown} cannot be resolved: {e}; {hint}")))?;
        let meta = match std::fs::metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::InvalidInput(format!("project path {} does not exist; {hint}", abs.display())))
            }
            Err(e) => {
                return Err(Error::InvalidInput(format!("project path {} is not readable: {e}; {hint}", abs.display())))
            }
        };
        if !meta.is_dir() {
            return Err(Error::InvalidInput(format!(
                "project path {} is not a directory; a project is a directory (a tar archive can be given as a workspace's seed_path instead)",
                abs.display()
            )));
        }
        if let Err(e) = std::fs::read_dir(&abs) {
            return Err(Error::InvalidInput(format!("project path {} is not readable: {e}; {hint}", abs.display())));
        }
        let root = std::fs::canonicalize(&abs).map_err(|e| Error::io(format!("resolving {}", abs.display()), e))?;
        let kind = match enclosing_git_dir(&root) {
            Some(_) if inside_work_tree(&root)? => OriginKind::GitCheckout,
            _ => OriginKind::Path,
        };
        Ok(Project::new(kind, root.clone(), root.display().to_string(), include_untracked, None))
    }

    /// The Git checkout containing `cwd` (its top level), or `None` when there is none.
    pub fn discover(cwd: &Path, include_untracked: bool) -> Result<Option<Project>> {
        if enclosing_git_dir(cwd).is_none() || !inside_work_tree(cwd)? {
            return Ok(None);
        }
        let top = git_text(cwd, &["rev-parse", "--show-toplevel"])?;
        Project::from_path(Path::new(&top), include_untracked).map(Some)
    }

    /// Clone `url` (at `reference`: a branch, tag or commit) into a private directory under
    /// `home/projects/`. Shallow where git allows it; a commit needs a full clone.
    pub fn clone_repo(home: &Path, url: &str, reference: Option<&str>) -> Result<Project> {
        let url = url.trim();
        if url.is_empty() {
            return Err(Error::InvalidInput("--repo-url must not be empty".into()));
        }
        if url.starts_with('-') {
            return Err(Error::InvalidInput(format!("--repo-url {url} is not a repository URL")));
        }
        if let Some(r) = reference {
            if r.trim().is_empty() || r.starts_with('-') || r.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::InvalidInput(format!("--repo-ref '{r}' is not a branch, tag or commit name")));
            }
        }
        let shown = url_without_credentials(url);
        let parent = home.join("projects");
        crate::util::create_private_dir(&parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        sweep_dead_clones(&parent);
        let dir = CloneDir(parent.join(format!("clone-{}-{}", std::process::id(), crate::util::new_id())));
        let hint = "check the URL (`git ls-remote URL` must work for the user running pyro) and its access rights";
        let mut args: Vec<&OsStr> = ["clone", "--quiet", "--depth", "1"].map(OsStr::new).to_vec();
        if let Some(r) = reference {
            args.extend([OsStr::new("--branch"), OsStr::new(r)]);
        }
        args.extend([OsStr::new("--"), OsStr::new(url), dir.0.as_os_str()]);
        if let Err(shallow) = git(None, &args) {
            let Some(r) = reference else {
                return Err(clone_error(&shown, shallow, hint));
            };
            // `--branch` takes branches and tags only: a commit needs the whole history.
            let _ = std::fs::remove_dir_all(&dir.0);
            let mut full: Vec<&OsStr> = ["clone", "--quiet", "--no-checkout", "--", url].map(OsStr::new).to_vec();
            full.push(dir.0.as_os_str());
            git(None, &full).map_err(|e| clone_error(&shown, e, hint))?;
            let spec = format!("{r}^{{commit}}");
            let commit = git_text(&dir.0, &["rev-parse", "--verify", "--quiet", &spec]).map_err(|_| {
                Error::InvalidInput(format!(
                    "repository {shown} has no branch, tag or commit '{r}'; list them with `git ls-remote {shown}` and pass one as --repo-ref"
                ))
            })?;
            git_text(&dir.0, &["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", &commit])?;
        }
        let root = dir.0.clone();
        Ok(Project::new(OriginKind::RepoUrl, root, shown, false, Some(dir)))
    }

    fn new(kind: OriginKind, root: PathBuf, shown: String, include_untracked: bool, clone: Option<CloneDir>) -> Self {
        Project { inner: Arc::new(Inner { kind, root, shown, include_untracked, _clone: clone }) }
    }

    /// `path`, `git_checkout` or `repo_url`.
    pub fn kind(&self) -> OriginKind {
        self.inner.kind
    }

    /// The directory seeded from (for a repository URL, its private clone).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Whether untracked, not-ignored files of a checkout are seeded too.
    pub fn include_untracked(&self) -> bool {
        self.inner.include_untracked
    }

    /// One line for the operator: what the project is.
    pub fn describe(&self) -> String {
        let i = &self.inner;
        let commit = match i.kind {
            OriginKind::GitCheckout | OriginKind::RepoUrl => head_commit(&i.root).ok().flatten(),
            _ => None,
        };
        let at = commit.map(|c| format!(" at {}", &c[..c.len().min(12)])).unwrap_or_default();
        let untracked = if i.include_untracked { ", untracked files included" } else { "" };
        format!("{} {}{at}{untracked}", i.kind.as_str(), i.shown)
    }

    /// Build the seed archive (blocking: runs git and reads the tree).
    pub(crate) fn seed(&self) -> Result<ProjectSeed> {
        let i = &self.inner;
        // The tree may have changed (or vanished) since the server started.
        if !i.root.is_dir() {
            return Err(Error::InvalidInput(format!(
                "project path {} is no longer a readable directory; restart the server with a valid --project-path",
                i.root.display()
            )));
        }
        let (tar, origin_ref, skipped) = match i.kind {
            OriginKind::Path | OriginKind::Empty => (pyro_tree::archive::build_tar_from_dir(&i.root)?, None, vec![]),
            OriginKind::GitCheckout | OriginKind::RepoUrl => {
                let mut args = vec!["ls-files", "-z", "--cached"];
                if i.include_untracked {
                    args.extend(["--others", "--exclude-standard"]);
                }
                let out = git(Some(&i.root), &args.iter().map(OsStr::new).collect::<Vec<_>>())
                    .map_err(|e| git_failure(&i.root, e))?;
                let paths = listed::parse_nul_list(&out);
                let built = listed::build_tar_from_list(&i.root, &paths)?;
                (built.tar, head_commit(&i.root)?, built.skipped)
            }
        };
        Ok(ProjectSeed { tar, seed_path: i.shown.clone(), origin_kind: i.kind, origin_ref, skipped })
    }
}

/// A private clone directory, removed when dropped.
#[derive(Debug)]
struct CloneDir(PathBuf);

impl Drop for CloneDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Remove `clone-<pid>-*` directories whose process is gone (a server killed before its
/// clone was dropped). A reused pid only keeps a stale clone a little longer.
fn sweep_dead_clones(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("clone-")).and_then(|r| r.split('-').next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The nearest `.git` (directory or file, as in worktrees and submodules) at or above `dir`.
fn enclosing_git_dir(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().map(|a| a.join(".git")).find(|g| g.symlink_metadata().is_ok())
}

fn inside_work_tree(dir: &Path) -> Result<bool> {
    match git(Some(dir), &["rev-parse".as_ref(), "--is-inside-work-tree".as_ref()]) {
        Ok(out) => Ok(String::from_utf8_lossy(&out).trim() == "true"),
        Err(GitError::Missing) => Err(git_missing(dir)),
        // A `.git` git does not recognise (a broken checkout, a `.git` in another user's
        // tree git refuses): not a checkout for us, but say why when asked for it.
        Err(GitError::Failed(msg)) => Err(Error::InvalidInput(format!(
            "{} looks like a Git checkout but git cannot read it: {msg}; fix the checkout or pass --no-project / another --project-path",
            dir.display()
        ))),
    }
}

/// `HEAD`'s commit, `None` in a repository without commits.
fn head_commit(root: &Path) -> Result<Option<String>> {
    match git(Some(root), &["rev-parse".as_ref(), "--verify".as_ref(), "--quiet".as_ref(), "HEAD".as_ref()]) {
        Ok(out) => Ok(Some(String::from_utf8_lossy(&out).trim().to_string())),
        Err(GitError::Missing) => Err(git_missing(root)),
        Err(GitError::Failed(_)) => Ok(None),
    }
}

enum GitError {
    /// No `git` on PATH.
    Missing,
    /// git ran and failed; its stderr (trimmed).
    Failed(String),
}

/// Run git (in `dir` when given) and return its stdout.
fn git(dir: Option<&Path>, args: &[&OsStr]) -> std::result::Result<Vec<u8>, GitError> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // The caller's GIT_DIR, GIT_INDEX_FILE, ... (a hook, a test harness) must not redirect
    // pyro's git at another repository.
    for (k, _) in std::env::vars_os() {
        if k.as_encoded_bytes().starts_with(b"GIT_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0");
    match cmd.output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(GitError::Missing),
        Err(e) => Err(GitError::Failed(format!("running git: {e}"))),
        Ok(out) if out.status.success() => Ok(out.stdout),
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let err: Vec<&str> = err.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let err = err.join(" ");
            Err(GitError::Failed(if err.is_empty() { format!("git exited with {}", out.status) } else { err }))
        }
    }
}

fn git_text(dir: &Path, args: &[&str]) -> Result<String> {
    let out = git(Some(dir), &args.iter().map(OsStr::new).collect::<Vec<_>>()).map_err(|e| git_failure(dir, e))?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

fn git_missing(dir: &Path) -> Error {
    Error::HostRequirement(format!(
        "git is needed to seed from the Git checkout at {} but was not found on PATH; install git (scripts/install-host-deps.sh does), or pass --no-project",
        dir.display()
    ))
}

fn git_failure(dir: &Path, e: GitError) -> Error {
    match e {
        GitError::Missing => git_missing(dir),
        GitError::Failed(msg) => Error::InvalidInput(format!("git failed in {}: {msg}", dir.display())),
    }
}

fn clone_error(shown: &str, e: GitError, hint: &str) -> Error {
    match e {
        GitError::Missing => Error::HostRequirement(
            "git is needed to clone --repo-url but was not found on PATH; install git (scripts/install-host-deps.sh does)"
                .into(),
        ),
        GitError::Failed(msg) => Error::InvalidInput(format!("repository {shown} cannot be cloned: {msg}; {hint}")),
    }
}

/// `scheme://user:secret@host/x` → `scheme://host/x`: a token in a URL must not reach payloads.
fn url_without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_leave_a_url() {
        assert_eq!(url_without_credentials("https://tok:x@github.com/a/b.git"), "https://github.com/a/b.git");
        assert_eq!(url_without_credentials("https://github.com/a/b@c.git"), "https://github.com/a/b@c.git");
        assert_eq!(url_without_credentials("file:///srv/repo.git"), "file:///srv/repo.git");
        assert_eq!(url_without_credentials("git@github.com:a/b.git"), "git@github.com:a/b.git");
    }

    #[test]
    fn origin_kinds_are_the_payload_strings() {
        let kinds = [OriginKind::Empty, OriginKind::Path, OriginKind::GitCheckout, OriginKind::RepoUrl];
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, ["empty", "path", "git_checkout", "repo_url"]);
    }

    #[test]
    fn conflicting_or_dangling_flags_are_refused_before_anything_runs() {
        let d = tempfile::tempdir().unwrap();
        let both = ProjectChoice {
            project_path: Some(d.path().into()),
            repo_url: Some("file:///x".into()),
            ..Default::default()
        };
        let e = Project::resolve(&both, d.path(), d.path()).unwrap_err();
        assert!(e.to_string().contains("pass one"), "{e}");
        let dangling = ProjectChoice { repo_ref: Some("main".into()), ..Default::default() };
        assert!(Project::resolve(&dangling, d.path(), d.path()).unwrap_err().to_string().contains("--repo-url"));
        let off = ProjectChoice { no_project: true, ..both };
        assert!(Project::resolve(&off, d.path(), d.path()).unwrap().is_none());
        for bad in ["", "-", "a b", "-x"] {
            let e = Project::clone_repo(d.path(), "file:///x", Some(bad)).unwrap_err();
            assert_eq!(e.code(), "invalid_input", "{bad}: {e}");
        }
        assert!(
            !d.path().join("projects").exists() || std::fs::read_dir(d.path().join("projects")).unwrap().count() == 0
        );
    }

    #[test]
    fn a_plain_directory_is_a_path_project_and_bad_paths_say_why() {
        let d = tempfile::tempdir().unwrap();
        // tempdir is not inside a checkout (unless TMPDIR is): only check when it is not.
        if enclosing_git_dir(d.path()).is_none() {
            let p = Project::from_path(d.path(), false).unwrap();
            assert_eq!(p.kind(), OriginKind::Path);
            assert!(Project::discover(d.path(), false).unwrap().is_none());
        }
        let missing = Project::from_path(&d.path().join("nope"), false).unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        std::fs::write(d.path().join("f"), "x").unwrap();
        let file = Project::from_path(&d.path().join("f"), false).unwrap_err();
        assert!(file.to_string().contains("is not a directory"), "{file}");
        assert_eq!(file.code(), "invalid_input");
    }

    fn sh(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn names(tar: &[u8]) -> Vec<String> {
        let mut v = Vec::new();
        pyro_tree::archive::for_each_member(tar, |m, _| {
            v.push(m.path_str());
            Ok(())
        })
        .unwrap();
        v
    }

    /// A checkout with tracked files, an ignored build dir, an untracked file and a socket.
    fn checkout(d: &Path) -> String {
        sh(d, &["init", "-q"]);
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::write(d.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
        std::fs::write(d.join(".gitignore"), "build/\n").unwrap();
        std::os::unix::fs::symlink("src/lib.rs", d.join("link")).unwrap();
        sh(d, &["add", "."]);
        sh(d, &["commit", "-qm", "one"]);
        std::fs::create_dir(d.join("build")).unwrap();
        std::fs::write(d.join("build/out.o"), "obj").unwrap();
        std::fs::write(d.join("notes.txt"), "untracked").unwrap();
        std::mem::forget(std::os::unix::net::UnixListener::bind(d.join("dev.sock")).unwrap());
        // An uncommitted edit is seeded as it is in the working tree.
        std::fs::write(d.join("src/lib.rs"), "pub fn f() { edited }\n").unwrap();
        sh(d, &["rev-parse", "HEAD"])
    }

    #[test]
    fn a_checkout_is_seeded_by_gits_rules() {
        let d = tempfile::tempdir().unwrap();
        let head = checkout(d.path());
        // From a subdirectory, discovery finds the top level.
        let p = Project::discover(&d.path().join("src"), false).unwrap().expect("a checkout");
        assert_eq!(p.kind(), OriginKind::GitCheckout);
        assert_eq!(p.root(), std::fs::canonicalize(d.path()).unwrap());
        let seed = p.seed().unwrap();
        assert_eq!(names(&seed.tar), [".gitignore", "link", "src", "src/lib.rs"]);
        assert_eq!(seed.origin_ref.as_deref(), Some(head.as_str()));
        assert!(seed.skipped.is_empty());
        let mut content = String::new();
        pyro_tree::archive::for_each_member(&seed.tar[..], |m, r| {
            if m.path_str() == "src/lib.rs" {
                r.read_to_string(&mut content).unwrap();
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(content, "pub fn f() { edited }\n");
        // Untracked, not ignored: notes.txt (git does not list the socket; ignored build/ never).
        let p = Project::from_path(d.path(), true).unwrap();
        let seed = p.seed().unwrap();
        assert_eq!(names(&seed.tar), [".gitignore", "link", "notes.txt", "src", "src/lib.rs"]);
        // A subdirectory as --project-path: only its files, paths relative to it.
        let sub = Project::from_path(&d.path().join("src"), false).unwrap();
        assert_eq!(names(&sub.seed().unwrap().tar), ["lib.rs"]);
        // A tracked file deleted in the working tree is skipped with a reason.
        std::fs::remove_file(d.path().join(".gitignore")).unwrap();
        let seed = Project::from_path(d.path(), false).unwrap().seed().unwrap();
        assert_eq!(seed.skipped.len(), 1);
        assert_eq!(seed.skipped[0].path, ".gitignore");
    }

    #[test]
    fn a_repository_url_is_cloned_at_a_branch_tag_or_commit_and_removed_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let work = d.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let first = checkout(&work);
        sh(&work, &["tag", "v1"]);
        std::fs::write(work.join("second.txt"), "2").unwrap();
        sh(&work, &["add", "second.txt"]);
        sh(&work, &["commit", "-qm", "two"]);
        let second = sh(&work, &["rev-parse", "HEAD"]);
        sh(&work, &["branch", "side", &first]);
        let bare = d.path().join("repo.git");
        sh(d.path(), &["clone", "-q", "--bare", work.to_str().unwrap(), bare.to_str().unwrap()]);
        let url = format!("file://{}", bare.display());
        let home = d.path().join("home");
        for (reference, want) in [
            (None, &second),
            (Some("main"), &second),
            (Some("v1"), &first),
            (Some("side"), &first),
            (Some(first.as_str()), &first),
            (Some(&first[..10]), &first),
        ] {
            let p = Project::clone_repo(&home, &url, reference).unwrap();
            assert_eq!(p.kind(), OriginKind::RepoUrl);
            let seed = p.seed().unwrap();
            assert_eq!(seed.origin_ref.as_ref(), Some(want), "{reference:?}");
            assert_eq!(seed.seed_path, url);
            assert_eq!(names(&seed.tar).contains(&"second.txt".to_string()), want == &second, "{reference:?}");
            let root = p.root().to_path_buf();
            assert!(root.starts_with(home.join("projects")));
            drop(p);
            assert!(!root.exists(), "the clone is removed with the project");
        }
        let e = Project::clone_repo(&home, &url, Some("no-such-ref")).unwrap_err();
        assert!(e.to_string().contains("has no branch, tag or commit 'no-such-ref'"), "{e}");
        let e = Project::clone_repo(&home, "file:///nonexistent/repo.git", None).unwrap_err();
        assert!(e.to_string().contains("cannot be cloned") && e.to_string().contains("git ls-remote"), "{e}");
        assert_eq!(e.code(), "invalid_input");
        assert_eq!(std::fs::read_dir(home.join("projects")).unwrap().count(), 0, "failed clones leave nothing");
    }
}
