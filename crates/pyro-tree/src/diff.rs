//! `workspace diff`: compare the baseline tar with the current `/workspace` tar.
//!
//! Both archives are read into memory maps (path → file bytes and mode, symlink target, or
//! directory); nothing is extracted, so no link in either tree can matter. Entries are
//! regular files, symlinks and *empty* directories (non-empty directories are implied by
//! their children). Text patches are git-style, so the concatenated `patch` applies with
//! `git apply` against the baseline tree and with pyro's own `patch apply`.

use crate::archive::{for_each_member, MemberKind};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use similar::{Algorithm, DiffTag};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::time::{Duration, Instant};

/// Lines of context around each change, as `diff -u` and git use.
const CONTEXT_LINES: usize = 3;
/// Upper bound for the line diff of one file; past it a coarser (still correct) diff is used.
const DIFF_DEADLINE: Duration = Duration::from_secs(5);

/// The diff payload (the engine adds `workspace_id`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DiffPayload {
    /// Whether anything differs.
    pub changed: bool,
    /// Counts by status and by whether a text patch was produced.
    pub summary: DiffSummary,
    /// One entry per changed path, sorted by path.
    pub entries: Vec<DiffEntry>,
    /// All text patches concatenated, in entry order.
    pub patch: String,
}

/// Counts of a diff. `text_patched + non_text == total`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DiffSummary {
    /// Changed paths.
    pub total: u64,
    /// Paths only in the current tree.
    pub added: u64,
    /// Files whose bytes changed, or symlinks whose target changed.
    pub modified: u64,
    /// Paths only in the baseline.
    pub deleted: u64,
    /// Paths whose kind changed (e.g. file to symlink).
    pub type_changed: u64,
    /// Changed paths that got a text patch (UTF-8 files without NUL bytes).
    pub text_patched: u64,
    /// Changed paths without a text patch (binary files, symlinks, directories, type changes).
    pub non_text: u64,
}

/// One changed path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DiffEntry {
    /// Path relative to `/workspace`, no leading slash.
    pub path: String,
    /// `added`, `deleted`, `modified` or `type_changed`.
    pub status: String,
    /// `file`, `directory` or `symlink` (the current kind; the baseline kind when deleted).
    pub artifact_type: String,
    /// The git-style patch of a text file, or `null`.
    pub text_patch: Option<String>,
}

/// Largest file whose bytes a diff keeps in memory (and can show as a text patch); larger
/// files are compared by SHA-256 and reported without a patch.
pub const DIFF_INLINE_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Most file bytes one tree keeps in memory during a diff; past it files are compared by
/// SHA-256 only. The archives come from the guest: their sizes are attacker input.
pub const DIFF_INLINE_TREE_BYTES: u64 = 256 * 1024 * 1024;

/// A file's content as kept for the comparison.
enum Content {
    Inline(Vec<u8>),
    Digest { size: u64, sha256: [u8; 32] },
}

impl Content {
    fn size_and_digest(&self) -> (u64, [u8; 32]) {
        use sha2::Digest;
        match self {
            Content::Inline(d) => (d.len() as u64, sha2::Sha256::digest(d).into()),
            Content::Digest { size, sha256 } => (*size, *sha256),
        }
    }

    fn same_as(&self, other: &Content) -> bool {
        match (self, other) {
            (Content::Inline(a), Content::Inline(b)) => a == b,
            _ => self.size_and_digest() == other.size_and_digest(),
        }
    }
}

/// What a path is in one tree.
enum Node {
    File { data: Content, mode: u32 },
    Symlink(String),
    Dir,
}

impl Node {
    fn artifact_type(&self) -> &'static str {
        match self {
            Node::File { .. } => "file",
            Node::Symlink(_) => "symlink",
            Node::Dir => "directory",
        }
    }
}

/// Compare two uncompressed tars (baseline, current) without extracting them.
pub fn diff_trees(baseline_tar: &[u8], current_tar: &[u8]) -> Result<DiffPayload> {
    diff_tar_streams(baseline_tar, current_tar)
}

/// [`diff_trees`] over streams (archives spooled to disk): memory stays bounded by
/// [`DIFF_INLINE_TREE_BYTES`] per tree plus the paths, whatever sizes the tars declare.
pub fn diff_tar_streams<A: Read, B: Read>(baseline_tar: A, current_tar: B) -> Result<DiffPayload> {
    let old = load_tree(baseline_tar)?;
    let new = load_tree(current_tar)?;
    let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut payload = DiffPayload::default();
    for path in paths {
        let (status, kind_node, patch) = match (old.get(path), new.get(path)) {
            (None, Some(n)) => ("added", n, text_patch(path, None, Some(n))),
            (Some(o), None) => ("deleted", o, text_patch(path, Some(o), None)),
            (Some(o), Some(n)) => match (o, n) {
                (Node::Dir, Node::Dir) => continue,
                (Node::Symlink(a), Node::Symlink(b)) if a == b => continue,
                (Node::Symlink(_), Node::Symlink(_)) => ("modified", n, None),
                (Node::File { data: a, .. }, Node::File { data: b, .. }) if a.same_as(b) => continue,
                (Node::File { .. }, Node::File { .. }) => ("modified", n, text_patch(path, Some(o), Some(n))),
                _ => ("type_changed", n, None),
            },
            (None, None) => unreachable!("every path comes from one of the trees"),
        };
        let s = &mut payload.summary;
        s.total += 1;
        match status {
            "added" => s.added += 1,
            "deleted" => s.deleted += 1,
            "modified" => s.modified += 1,
            _ => s.type_changed += 1,
        }
        if let Some(p) = &patch {
            s.text_patched += 1;
            payload.patch.push_str(p);
        } else {
            s.non_text += 1;
        }
        payload.entries.push(DiffEntry {
            path: path.clone(),
            status: status.to_string(),
            artifact_type: kind_node.artifact_type().to_string(),
            text_patch: patch,
        });
    }
    payload.changed = payload.summary.total > 0;
    Ok(payload)
}

/// Read a tar into path → node, keeping only files, symlinks and empty directories.
fn load_tree<R: Read>(tar: R) -> Result<BTreeMap<String, Node>> {
    let mut tree = BTreeMap::new();
    let mut inline_left = DIFF_INLINE_TREE_BYTES;
    for_each_member(tar, |m, data| {
        let node = match &m.kind {
            MemberKind::Directory => Node::Dir,
            MemberKind::Symlink { target } => Node::Symlink(target.to_string_lossy().into_owned()),
            MemberKind::File { size } => {
                let bad = Error::InvalidTar;
                // The declared size is never used to allocate: the bytes read are what count.
                let content = if *size <= DIFF_INLINE_FILE_BYTES && *size <= inline_left {
                    let mut bytes = Vec::new();
                    data.take(*size).read_to_end(&mut bytes).map_err(bad)?;
                    inline_left -= bytes.len() as u64;
                    Content::Inline(bytes)
                } else {
                    use sha2::Digest;
                    let mut hasher = sha2::Sha256::new();
                    let size = std::io::copy(&mut data.take(*size), &mut hasher).map_err(bad)?;
                    Content::Digest { size, sha256: hasher.finalize().into() }
                };
                Node::File { data: content, mode: m.mode }
            }
        };
        // A later member with the same name replaces the earlier one, as on extraction.
        tree.insert(m.path_str(), node);
        Ok(())
    })?;
    let parents: BTreeSet<String> =
        tree.keys().flat_map(|p| p.match_indices('/').map(move |(i, _)| p[..i].to_string())).collect();
    tree.retain(|path, node| !matches!(node, Node::Dir) || !parents.contains(path));
    Ok(tree)
}

/// Text = valid UTF-8 without NUL bytes (the reference's rule).
fn as_text(data: &[u8]) -> Option<&str> {
    if data.contains(&0) {
        return None;
    }
    std::str::from_utf8(data).ok()
}

/// git's file mode for a regular file: only the executable bit is recorded.
fn git_mode(mode: u32) -> &'static str {
    if mode & 0o111 != 0 {
        "100755"
    } else {
        "100644"
    }
}

/// The git-style patch for a file that was added, deleted or modified, when every present
/// side is a text file; `None` otherwise (binary, symlink, directory).
fn text_patch(path: &str, old: Option<&Node>, new: Option<&Node>) -> Option<String> {
    let (old, new) = (text_side(old)?, text_side(new)?);
    let (a, b) = (quote_name("a/", path), quote_name("b/", path));
    let mut out = format!("diff --git {a} {b}\n");
    match (old, new) {
        (None, Some((_, m))) => out.push_str(&format!("new file mode {}\n", git_mode(m))),
        (Some((_, m)), None) => out.push_str(&format!("deleted file mode {}\n", git_mode(m))),
        (Some((_, om)), Some((_, nm))) if git_mode(om) != git_mode(nm) => {
            out.push_str(&format!("old mode {}\nnew mode {}\n", git_mode(om), git_mode(nm)));
        }
        _ => {}
    }
    let old_text = old.map(|(t, _)| t).unwrap_or("");
    let new_text = new.map(|(t, _)| t).unwrap_or("");
    let hunks = unified_hunks(old_text, new_text);
    // git writes no ---/+++ lines for an empty file that is created or deleted.
    if !hunks.is_empty() {
        // git ends a name containing a space with a tab so the label cannot be misread.
        let tab = if path.contains(' ') && !a.starts_with('"') { "\t" } else { "" };
        let label = |side: Option<(&str, u32)>, name: &str| {
            if side.is_some() {
                format!("{name}{tab}")
            } else {
                "/dev/null".to_string()
            }
        };
        out.push_str(&format!("--- {}\n+++ {}\n", label(old, &a), label(new, &b)));
        out.push_str(&hunks);
    }
    Some(out)
}

/// One side of a text patch: `Some(None)` when absent, `Some(Some(text, mode))` for a text
/// file, `None` when the side cannot be shown as text.
fn text_side(n: Option<&Node>) -> Option<Option<(&str, u32)>> {
    match n {
        None => Some(None),
        Some(Node::File { data: Content::Inline(data), mode }) => as_text(data).map(|t| Some((t, *mode))),
        Some(_) => None,
    }
}

/// `prefix + path`, C-quoted the way git does when the name has `"`, `\` or control
/// characters (other non-ASCII bytes stay as they are, like `core.quotePath=false`).
fn quote_name(prefix: &str, path: &str) -> String {
    let needs = path.chars().any(|c| c == '"' || c == '\\' || c.is_ascii_control());
    if !needs {
        return format!("{prefix}{path}");
    }
    let mut out = String::from("\"");
    out.push_str(prefix);
    for c in path.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Split into lines that keep their `\n`. Only `\n` ends a line (git's rule; a lone `\r`
/// is content), which is why the lines are split here rather than by `similar`.
fn lines_of(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

/// The hunks (`@@ ... @@` and body) of a unified diff with 3 context lines; empty when equal.
fn unified_hunks(old: &str, new: &str) -> String {
    let (a, b) = (lines_of(old), lines_of(new));
    let ops = similar::capture_diff_slices_deadline(Algorithm::Myers, &a, &b, Some(Instant::now() + DIFF_DEADLINE));
    let mut out = String::new();
    for group in similar::group_diff_ops(ops, CONTEXT_LINES) {
        let (Some(first), Some(last)) = (group.first(), group.last()) else { continue };
        let old_range = first.old_range().start..last.old_range().end;
        let new_range = first.new_range().start..last.new_range().end;
        out.push_str(&format!("@@ -{} +{} @@\n", hunk_range(&old_range), hunk_range(&new_range)));
        for op in &group {
            let (tag, o, n) = op.as_tag_tuple();
            match tag {
                DiffTag::Equal => o.for_each(|i| push_line(&mut out, ' ', a[i])),
                DiffTag::Delete => o.for_each(|i| push_line(&mut out, '-', a[i])),
                DiffTag::Insert => n.for_each(|i| push_line(&mut out, '+', b[i])),
                DiffTag::Replace => {
                    o.for_each(|i| push_line(&mut out, '-', a[i]));
                    n.for_each(|i| push_line(&mut out, '+', b[i]));
                }
            }
        }
    }
    out
}

/// GNU range syntax: `start,len`, `start` alone when len is 1, and for an empty range the
/// line *before* it (so `0,0` for an empty file).
fn hunk_range(r: &std::ops::Range<usize>) -> String {
    match r.len() {
        0 => format!("{},0", r.start),
        1 => format!("{}", r.start + 1),
        n => format!("{},{n}", r.start + 1),
    }
}

fn push_line(out: &mut String, tag: char, line: &str) {
    out.push(tag);
    out.push_str(line);
    if !line.ends_with('\n') {
        out.push_str("\n\\ No newline at end of file\n");
    }
}

#[cfg(all(test, feature = "host"))]
mod tests {
    use super::super::archive::build_tar_from_dir;
    use super::super::patch::{apply_file_patch, parse_patch};
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::Path;
    use std::process::Command;

    /// A tar with one regular file whose header claims `size` bytes but carries `data`.
    fn lying_tar(size: u64, data: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_path("big.bin").unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn a_guest_declared_size_is_never_allocated() {
        // 2^60 declared, 10 bytes present: an error, not an allocation abort.
        let msg = match diff_trees(&lying_tar(1 << 60, b"0123456789"), &lying_tar(1 << 60, b"")) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a truncated archive must be refused"),
        };
        assert!(msg.contains("invalid tar archive"), "{msg}");
    }

    #[test]
    fn big_files_are_compared_by_digest_without_a_patch() {
        let (base, cur) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let big = vec![b'a'; DIFF_INLINE_FILE_BYTES as usize + 1];
        let mut changed = big.clone();
        *changed.last_mut().unwrap() = b'b';
        write(base.path(), "same.txt", &big);
        write(cur.path(), "same.txt", &big);
        write(base.path(), "changed.txt", &big);
        write(cur.path(), "changed.txt", &changed);
        let d =
            diff_trees(&build_tar_from_dir(base.path()).unwrap(), &build_tar_from_dir(cur.path()).unwrap()).unwrap();
        assert_eq!(d.entries.len(), 1, "{:?}", d.entries);
        assert_eq!((d.entries[0].path.as_str(), d.entries[0].status.as_str()), ("changed.txt", "modified"));
        assert!(d.entries[0].text_patch.is_none());
        assert_eq!(d.summary.non_text, 1);
    }

    fn write(root: &Path, rel: &str, data: &[u8]) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    fn long_text(n: usize) -> String {
        (1..=n).map(|i| format!("line {i}\n")).collect()
    }

    /// Baseline and current trees covering every status and the newline/mode corner cases.
    fn trees() -> (tempfile::TempDir, tempfile::TempDir) {
        let (base, cur) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (b, c) = (base.path(), cur.path());
        for root in [b, c] {
            write(root, "same.txt", b"unchanged\n");
            write(root, "src/lib/keep.py", b"x = 1\n");
            fs::create_dir_all(root.join("kept_empty")).unwrap();
            symlink("same.txt", root.join("same_link")).unwrap();
        }
        write(b, "src/main.py", long_text(30).as_bytes());
        write(c, "src/main.py", long_text(30).replace("line 2\n", "line two\n").replace("line 25\n", "").as_bytes());
        write(b, "deleted.txt", b"gone\n");
        write(c, "added dir/new file.txt", b"hello\nworld\n");
        write(c, "tool.sh", b"#!/bin/sh\necho hi\n");
        fs::set_permissions(c.join("tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        write(b, "chmod.sh", b"echo a\n");
        write(c, "chmod.sh", b"echo b\n");
        fs::set_permissions(c.join("chmod.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        write(b, "gains_nl.txt", b"a\nb");
        write(c, "gains_nl.txt", b"a\nb\n");
        write(b, "loses_nl.txt", b"a\nb\n");
        write(c, "loses_nl.txt", b"a\nb");
        write(c, "no_nl_new.txt", b"no newline");
        write(b, "no_nl_gone.txt", b"no newline");
        write(b, "type.txt", b"was a file\n");
        symlink("same.txt", c.join("type.txt")).unwrap();
        write(b, "bin.dat", b"\x00\x01\x02");
        write(c, "bin.dat", b"\x00\x01\x03");
        write(b, "latin1.txt", b"caf\xe9\n");
        write(c, "latin1.txt", b"caf\xe8\n");
        symlink("a", b.join("link")).unwrap();
        symlink("b", c.join("link")).unwrap();
        write(c, "empty_new.txt", b"");
        write(b, "empty_gone.txt", b"");
        fs::create_dir_all(c.join("new_empty_dir")).unwrap();
        fs::create_dir_all(b.join("old_empty_dir")).unwrap();
        write(b, "cr.txt", b"a\rb\n");
        write(c, "cr.txt", b"a\rc\n");
        (base, cur)
    }

    #[test]
    fn statuses_and_summary() {
        let (base, cur) = trees();
        let d =
            diff_trees(&build_tar_from_dir(base.path()).unwrap(), &build_tar_from_dir(cur.path()).unwrap()).unwrap();
        let got: Vec<(&str, &str, &str, bool)> = d
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.status.as_str(), e.artifact_type.as_str(), e.text_patch.is_some()))
            .collect();
        assert_eq!(
            got,
            [
                ("added dir/new file.txt", "added", "file", true),
                ("bin.dat", "modified", "file", false),
                ("chmod.sh", "modified", "file", true),
                ("cr.txt", "modified", "file", true),
                ("deleted.txt", "deleted", "file", true),
                ("empty_gone.txt", "deleted", "file", true),
                ("empty_new.txt", "added", "file", true),
                ("gains_nl.txt", "modified", "file", true),
                ("latin1.txt", "modified", "file", false),
                ("link", "modified", "symlink", false),
                ("loses_nl.txt", "modified", "file", true),
                ("new_empty_dir", "added", "directory", false),
                ("no_nl_gone.txt", "deleted", "file", true),
                ("no_nl_new.txt", "added", "file", true),
                ("old_empty_dir", "deleted", "directory", false),
                ("src/main.py", "modified", "file", true),
                ("tool.sh", "added", "file", true),
                ("type.txt", "type_changed", "symlink", false),
            ]
        );
        let s = &d.summary;
        assert!(d.changed);
        assert_eq!((s.total, s.added, s.modified, s.deleted, s.type_changed), (18, 5, 8, 4, 1));
        assert_eq!((s.text_patched, s.non_text), (12, 6));
        let tool = d.entries.iter().find(|e| e.path == "tool.sh").unwrap().text_patch.as_deref().unwrap();
        assert_eq!(tool, "diff --git a/tool.sh b/tool.sh\nnew file mode 100755\n--- /dev/null\n+++ b/tool.sh\n@@ -0,0 +1,2 @@\n+#!/bin/sh\n+echo hi\n");
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["summary"]["text_patched"], 12);
        assert!(json["entries"][1]["text_patch"].is_null());
    }

    #[test]
    fn identical_trees_have_no_changes() {
        let (base, _) = trees();
        let tar = build_tar_from_dir(base.path()).unwrap();
        let d = diff_trees(&tar, &tar).unwrap();
        assert!(!d.changed);
        assert_eq!(d.summary, DiffSummary::default());
        assert!(d.patch.is_empty() && d.entries.is_empty());
        let empty = super::super::archive::empty_tar();
        let all_added = diff_trees(&empty, &tar).unwrap();
        assert!(all_added.entries.iter().all(|e| e.status == "added"));
    }

    #[test]
    fn hunks_use_gnu_ranges_and_context() {
        let h = unified_hunks(&long_text(10), &long_text(10).replace("line 5\n", "five\n"));
        assert_eq!(h, "@@ -2,7 +2,7 @@\n line 2\n line 3\n line 4\n-line 5\n+five\n line 6\n line 7\n line 8\n");
        assert_eq!(unified_hunks("", "a\n"), "@@ -0,0 +1 @@\n+a\n");
        assert_eq!(unified_hunks("a", "a\n"), "@@ -1 +1 @@\n-a\n\\ No newline at end of file\n+a\n");
        assert_eq!(unified_hunks("same\n", "same\n"), "");
        // Far-apart changes make separate hunks.
        let far = unified_hunks(&long_text(20), &long_text(20).replace("line 1\n", "1\n").replace("line 20\n", "20\n"));
        assert_eq!(far.matches("@@ -").count(), 2);
    }

    #[test]
    fn names_are_quoted_like_git() {
        assert_eq!(quote_name("a/", "plain/ü.txt"), "a/plain/ü.txt");
        assert_eq!(quote_name("a/", "tab\there"), "\"a/tab\\there\"");
        assert_eq!(quote_name("b/", "q\"\\\x01"), "\"b/q\\\"\\\\\\001\"");
    }

    fn copy_tree(tar: &[u8], dest: &Path) {
        super::super::archive::extract_tar_safely(tar, dest).unwrap();
    }

    fn git(dir: &Path, args: &[&str]) -> std::process::Output {
        Command::new("git").args(args).current_dir(dir).output().expect("git runs")
    }

    #[test]
    fn patch_applies_with_git_and_with_pyro() {
        if !Command::new("git").arg("--version").output().map(|o| o.status.success()).unwrap_or(false) {
            eprintln!("git not found: skipping the git apply check");
            return;
        }
        let (base, cur) = trees();
        let base_tar = build_tar_from_dir(base.path()).unwrap();
        let d = diff_trees(&base_tar, &build_tar_from_dir(cur.path()).unwrap()).unwrap();
        let text_paths: Vec<&str> =
            d.entries.iter().filter(|e| e.text_patch.is_some()).map(|e| e.path.as_str()).collect();

        // git apply against a repo holding the baseline.
        let repo = tempfile::tempdir().unwrap();
        let work = repo.path().join("w");
        copy_tree(&base_tar, &work);
        assert!(git(&work, &["init", "-q"]).status.success());
        fs::write(repo.path().join("p.diff"), &d.patch).unwrap();
        let check = git(&work, &["apply", "--check", "../p.diff"]);
        assert!(check.status.success(), "git apply --check: {}\n{}", String::from_utf8_lossy(&check.stderr), d.patch);
        let apply = git(&work, &["apply", "../p.diff"]);
        assert!(apply.status.success(), "git apply: {}", String::from_utf8_lossy(&apply.stderr));
        for p in &text_paths {
            let want = fs::read(cur.path().join(p)).ok();
            assert_eq!(fs::read(work.join(p)).ok(), want, "{p} after git apply");
        }
        let mode = |root: &Path, p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o111;
        assert_ne!(mode(&work, "tool.sh"), 0, "new executable keeps its mode");
        assert_ne!(mode(&work, "chmod.sh"), 0, "mode change is carried");

        // pyro's own parser and applier accept the same patch.
        for fp in parse_patch(&d.patch).unwrap() {
            let rel = fp.path().strip_prefix("/workspace/").unwrap();
            let before = fs::read_to_string(base.path().join(rel)).ok();
            let after = apply_file_patch(before.as_deref(), &fp).unwrap();
            assert_eq!(after, fs::read_to_string(cur.path().join(rel)).ok(), "{rel} after pyro apply");
        }
    }
}
