//! Parsing and strict application of unified diffs, including real `git diff` output.
//!
//! Accepted beyond plain unified diffs (what `git diff` writes, so agents can apply it):
//! `new file mode`, `deleted file mode`,
//! `old mode`/`new mode` (recorded), C-quoted git file names, header-only git sections that
//! create or delete an empty file, and `\ No newline at end of file`, which is honoured: it
//! says the line before it has no trailing newline, both when matching and when writing.
//!
//! Application has no fuzz and no offset search: every context and removed line must match
//! exactly where the hunk header says. Errors name the file and the hunk.

use crate::paths::normalize_workspace_path;
use crate::{Error, Result};

/// What a file patch does to its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The file does not exist yet and is created.
    Added,
    /// The file exists and is changed.
    Modified,
    /// The file exists and is removed.
    Deleted,
}

impl ChangeKind {
    /// The payload spelling: `added`, `modified` or `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
        }
    }
}

/// The role of one hunk line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// ` ` — must match and is kept.
    Context,
    /// `-` — must match and is dropped.
    Removed,
    /// `+` — is inserted.
    Added,
}

/// One body line of a hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HunkLine {
    /// Context, removed or added.
    pub kind: LineKind,
    /// The line's text without its line ending.
    pub text: String,
    /// `false` when a `\ No newline at end of file` marker follows the line.
    pub newline: bool,
}

/// One `@@ -a,b +c,d @@` hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    /// First old line (1-based; 0 for an empty old side).
    pub old_start: usize,
    /// Old line count.
    pub old_count: usize,
    /// First new line (1-based; 0 for an empty new side).
    pub new_start: usize,
    /// New line count.
    pub new_count: usize,
    /// Body lines in order.
    pub lines: Vec<HunkLine>,
}

impl Hunk {
    /// The hunk's header as `@@ -a,b +c,d @@`, for messages.
    pub fn header(&self) -> String {
        format!("@@ -{},{} +{},{} @@", self.old_start, self.old_count, self.new_start, self.new_count)
    }
}

/// The changes a patch makes to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePatch {
    /// Normalised old path (`None` for `/dev/null`: the file is added).
    pub old_path: Option<String>,
    /// Normalised new path (`None` for `/dev/null`: the file is deleted).
    pub new_path: Option<String>,
    /// Mode from `old mode` / `deleted file mode`, if given.
    pub old_mode: Option<u32>,
    /// Mode from `new mode` / `new file mode`, if given.
    pub new_mode: Option<u32>,
    /// Hunks in file order (empty only for git's header-only empty-file sections).
    pub hunks: Vec<Hunk>,
}

impl FilePatch {
    /// The absolute guest path the patch touches.
    pub fn path(&self) -> &str {
        self.new_path.as_deref().or(self.old_path.as_deref()).unwrap_or_default()
    }

    /// Added, modified or deleted.
    pub fn kind(&self) -> ChangeKind {
        match (&self.old_path, &self.new_path) {
            (None, _) => ChangeKind::Added,
            (_, None) => ChangeKind::Deleted,
            _ => ChangeKind::Modified,
        }
    }

    /// The payload status: `added`, `modified` or `deleted`.
    pub fn status(&self) -> &'static str {
        self.kind().as_str()
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// Git extended header lines seen since the last `diff --git` line.
#[derive(Default)]
struct GitHeader {
    /// The `diff --git` line, if there was one.
    line: Option<String>,
    old_mode: Option<u32>,
    new_mode: Option<u32>,
    new_file: bool,
    deleted_file: bool,
}

impl GitHeader {
    fn is_empty(&self) -> bool {
        self.line.is_none() && self.old_mode.is_none() && self.new_mode.is_none()
    }
}

/// Parse a unified or git diff into per-file patches (paths normalised under `/workspace`).
pub fn parse_patch(patch: &str) -> Result<Vec<FilePatch>> {
    if patch.trim().is_empty() {
        return Err(invalid("patch must not be empty"));
    }
    let mut lines: Vec<&str> = patch.split('\n').collect();
    if patch.ends_with('\n') {
        lines.pop();
    }
    let mut files: Vec<FilePatch> = Vec::new();
    let mut header = GitHeader::default();
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i];
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let at = |msg: &str| invalid(format!("patch line {}: {msg}", i + 1));
        if line.starts_with("diff --git ") {
            finish_header_only(&mut header, &mut files)?;
            header.line = Some(line.to_string());
        } else if line.starts_with("index ") {
            // Blob ids only matter to git's three-way fallback.
        } else if let Some(m) = line.strip_prefix("new file mode ") {
            header.new_mode = Some(parse_mode(m).map_err(|e| at(&e))?);
            header.new_file = true;
        } else if let Some(m) = line.strip_prefix("deleted file mode ") {
            header.old_mode = Some(parse_mode(m).map_err(|e| at(&e))?);
            header.deleted_file = true;
        } else if let Some(m) = line.strip_prefix("old mode ") {
            header.old_mode = Some(parse_mode(m).map_err(|e| at(&e))?);
        } else if let Some(m) = line.strip_prefix("new mode ") {
            header.new_mode = Some(parse_mode(m).map_err(|e| at(&e))?);
        } else if let Some(feature) = unsupported_feature(line) {
            return Err(invalid(format!("unsupported patch feature: {feature}")));
        } else if line.trim().is_empty() {
            // Blank lines between file sections.
        } else if let Some(old_label) = line.strip_prefix("--- ") {
            let next = lines.get(i + 1).map(|l| l.strip_suffix('\r').unwrap_or(l));
            let Some(new_label) = next.and_then(|l| l.strip_prefix("+++ ")) else {
                return Err(at("'--- ' must be followed by a '+++ ' line"));
            };
            let old_path = parse_label(old_label, i + 1)?;
            let new_path = parse_label(new_label, i + 2)?;
            let mut fp = FilePatch { old_path, new_path, old_mode: None, new_mode: None, hunks: Vec::new() };
            let h = std::mem::take(&mut header);
            check_labels(&fp, &h)?;
            fp.old_mode = h.old_mode;
            fp.new_mode = h.new_mode;
            i += 2;
            while i < lines.len() && lines[i].starts_with("@@") {
                let hunk_no = fp.hunks.len() + 1;
                let (hunk, next) = parse_hunk(&lines, i, fp.path(), hunk_no)?;
                fp.hunks.push(hunk);
                i = next;
            }
            if fp.hunks.is_empty() {
                return Err(invalid(format!("patch for {} contains no hunks", fp.path())));
            }
            push_file(&mut files, fp)?;
            continue;
        } else if line.starts_with("@@") {
            return Err(at("hunk without a file header ('--- ' and '+++ ' lines)"));
        } else {
            return Err(at(&format!("not part of a unified diff: {}", shorten(line))));
        }
        i += 1;
    }
    finish_header_only(&mut header, &mut files)?;
    if files.is_empty() {
        return Err(invalid("patch does not contain any file changes"));
    }
    Ok(files)
}

/// The git extended headers pyro cannot apply, named for the error message.
fn unsupported_feature(line: &str) -> Option<&str> {
    const PREFIXES: [&str; 8] = [
        "rename from",
        "rename to",
        "copy from",
        "copy to",
        "similarity index",
        "dissimilarity index",
        "GIT binary patch",
        "Binary files",
    ];
    PREFIXES.iter().any(|p| line.starts_with(p)).then_some(line.trim())
}

fn parse_mode(text: &str) -> std::result::Result<u32, String> {
    let text = text.trim();
    let mode = u32::from_str_radix(text, 8).map_err(|_| format!("invalid file mode '{text}'"))?;
    // Only regular files can be patched; git's 120000 (symlink) and 160000 (submodule)
    // sections describe things a text write cannot produce.
    if mode & 0o170000 != 0o100000 {
        return Err(format!("unsupported patch feature: file mode {text} (only regular files can be patched)"));
    }
    Ok(mode)
}

/// A git section with no `---`/`+++` lines: git writes these for an empty file that is
/// created or deleted. Anything else without hunks (a mode-only change) cannot be applied.
fn finish_header_only(header: &mut GitHeader, files: &mut Vec<FilePatch>) -> Result<()> {
    let h = std::mem::take(header);
    if h.is_empty() {
        return Ok(());
    }
    let Some(line) = h.line.as_deref() else {
        return Err(invalid("file mode lines must be followed by '--- ' and '+++ ' lines"));
    };
    let name = git_header_path(line).ok_or_else(|| invalid(format!("cannot read the file name from: {line}")))?;
    let path = normalize_workspace_path(&name)?;
    let fp = if h.new_file {
        FilePatch { old_path: None, new_path: Some(path), old_mode: None, new_mode: h.new_mode, hunks: Vec::new() }
    } else if h.deleted_file {
        FilePatch { old_path: Some(path), new_path: None, old_mode: h.old_mode, new_mode: None, hunks: Vec::new() }
    } else if h.old_mode.is_some() || h.new_mode.is_some() {
        return Err(invalid(format!(
            "unsupported patch feature: mode-only change for {path} (patch apply changes file contents only)"
        )));
    } else {
        return Err(invalid(format!("patch section for {path} contains no changes")));
    };
    push_file(files, fp)
}

/// The file name of a `diff --git a/P b/P` line (both sides name the same file, since
/// renames and copies are refused). Unquoted names may contain spaces, so the line is split
/// where both halves agree.
fn git_header_path(line: &str) -> Option<String> {
    let rest = line.strip_prefix("diff --git ")?;
    if rest.starts_with('"') {
        let (first, used) = unquote_c(rest)?;
        let second = rest[used..].trim_start();
        let (second, _) = if second.starts_with('"') { unquote_c(second)? } else { (second.to_string(), 0) };
        let a = strip_side_prefix(&first);
        return (a == strip_side_prefix(&second)).then(|| a.to_string());
    }
    // `a/P b/P` (or `P P` with --no-prefix): the separating space sits in the middle.
    if rest.len() % 2 == 1 {
        let mid = rest.len() / 2;
        let (a, b) = (rest.get(..mid)?, rest.get(mid + 1..)?);
        if rest.as_bytes()[mid] == b' ' && strip_side_prefix(a) == strip_side_prefix(b) {
            return Some(strip_side_prefix(a).to_string());
        }
    }
    None
}

fn strip_side_prefix(name: &str) -> &str {
    name.strip_prefix("a/").or_else(|| name.strip_prefix("b/")).unwrap_or(name)
}

/// Parse a `---`/`+++` label: drop a tab suffix (timestamps; git's marker after names with
/// spaces), unquote C-style names, map `/dev/null` to `None`, strip `a/`/`b/`, normalise.
fn parse_label(label: &str, line_no: usize) -> Result<Option<String>> {
    let label = if label.starts_with('"') {
        unquote_c(label)
            .map(|(s, _)| s)
            .ok_or_else(|| invalid(format!("patch line {line_no}: bad quoted file name")))?
    } else {
        label.split('\t').next().unwrap_or_default().to_string()
    };
    if label == "/dev/null" {
        return Ok(None);
    }
    normalize_workspace_path(strip_side_prefix(&label)).map(Some)
}

fn check_labels(fp: &FilePatch, h: &GitHeader) -> Result<()> {
    match (&fp.old_path, &fp.new_path) {
        (None, None) => Err(invalid("patch file header has /dev/null on both sides")),
        (Some(a), Some(b)) if a != b => Err(invalid("rename and copy patches are not supported")),
        (Some(_), _) if h.new_file => {
            Err(invalid(format!("patch says 'new file mode' for {} but its old side is not /dev/null", fp.path())))
        }
        (_, Some(_)) if h.deleted_file => {
            Err(invalid(format!("patch says 'deleted file mode' for {} but its new side is not /dev/null", fp.path())))
        }
        _ => Ok(()),
    }
}

fn push_file(files: &mut Vec<FilePatch>, fp: FilePatch) -> Result<()> {
    if files.iter().any(|f| f.path() == fp.path()) {
        return Err(invalid(format!("patch contains duplicate file entries for {}", fp.path())));
    }
    files.push(fp);
    Ok(())
}

/// Decode a C-quoted git name starting at `s[0] == '"'`; returns it and the bytes consumed.
fn unquote_c(s: &str) -> Option<(String, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'"' => return String::from_utf8(out).ok().map(|name| (name, i + 1)),
            b'\\' => {
                let c = *b.get(i + 1)?;
                i += 2;
                out.push(match c {
                    b'a' => 7,
                    b'b' => 8,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'v' => 11,
                    b'f' => 12,
                    b'r' => b'\r',
                    b'"' | b'\\' => c,
                    b'0'..=b'3' => {
                        let d = b.get(i..i + 2)?;
                        if !d.iter().all(|x| (b'0'..=b'7').contains(x)) {
                            return None;
                        }
                        i += 2;
                        (c - b'0') * 64 + (d[0] - b'0') * 8 + (d[1] - b'0')
                    }
                    _ => return None,
                });
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

/// Parse `@@ -a[,b] +c[,d] @@...`; counts default to 1.
fn parse_hunk_header(line: &str) -> Option<(usize, usize, usize, usize)> {
    let rest = line.strip_prefix("@@ -")?;
    let (ranges, _) = rest.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let range = |r: &str| -> Option<(usize, usize)> {
        match r.split_once(',') {
            Some((s, c)) => Some((s.parse().ok()?, c.parse().ok()?)),
            None => Some((r.parse().ok()?, 1)),
        }
    };
    let (a, b) = range(old)?;
    let (c, d) = range(new)?;
    Some((a, b, c, d))
}

/// Parse the hunk whose header is `lines[start]`; returns it and the index after it.
fn parse_hunk(lines: &[&str], start: usize, path: &str, hunk_no: usize) -> Result<(Hunk, usize)> {
    let header_line = lines[start].strip_suffix('\r').unwrap_or(lines[start]);
    let (old_start, old_count, new_start, new_count) = parse_hunk_header(header_line)
        .ok_or_else(|| invalid(format!("patch line {}: invalid hunk header: {}", start + 1, shorten(header_line))))?;
    let mut hunk = Hunk { old_start, old_count, new_start, new_count, lines: Vec::new() };
    let mismatch = |h: &Hunk| {
        invalid(format!("patch hunk line counts do not match the header for {path} at hunk {hunk_no} ({})", h.header()))
    };
    let (mut old_left, mut new_left) = (old_count, new_count);
    let mut i = start + 1;
    while old_left > 0 || new_left > 0 {
        let Some(line) = lines.get(i) else { return Err(mismatch(&hunk)) };
        let (kind, text) = match line.as_bytes().first() {
            Some(b' ') => (LineKind::Context, &line[1..]),
            Some(b'-') => (LineKind::Removed, &line[1..]),
            Some(b'+') => (LineKind::Added, &line[1..]),
            Some(b'\\') => {
                mark_no_newline(&mut hunk, i)?;
                i += 1;
                continue;
            }
            // Editors and models often strip the lone space of an empty context line; git
            // accepts such a line as empty context, and so does pyro.
            None => (LineKind::Context, ""),
            Some(_) => return Err(mismatch(&hunk)),
        };
        match kind {
            LineKind::Context if old_left > 0 && new_left > 0 => {
                old_left -= 1;
                new_left -= 1;
            }
            LineKind::Removed if old_left > 0 => old_left -= 1,
            LineKind::Added if new_left > 0 => new_left -= 1,
            _ => return Err(mismatch(&hunk)),
        }
        hunk.lines.push(HunkLine { kind, text: text.to_string(), newline: true });
        i += 1;
    }
    if lines.get(i).is_some_and(|l| l.starts_with('\\')) {
        mark_no_newline(&mut hunk, i)?;
        i += 1;
    }
    // A body line right after the counted ones means the header undercounts.
    if lines
        .get(i)
        .is_some_and(|l| (l.starts_with(' ') || l.starts_with('+') || l.starts_with('-')) && !l.starts_with("--- "))
    {
        return Err(mismatch(&hunk));
    }
    Ok((hunk, i))
}

fn mark_no_newline(hunk: &mut Hunk, i: usize) -> Result<()> {
    match hunk.lines.last_mut() {
        Some(l) => {
            l.newline = false;
            Ok(())
        }
        None => Err(invalid(format!("patch line {}: '\\ No newline at end of file' must follow a hunk line", i + 1))),
    }
}

fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(MAX).collect::<String>())
    }
}

/// A file's text as lines without endings, each with "ends in a newline".
fn split_lines(text: &str) -> Vec<(&str, bool)> {
    text.split_inclusive('\n')
        .map(|l| match l.strip_suffix('\n') {
            Some(body) => (body, true),
            None => (l, false),
        })
        .collect()
}

/// Apply one file patch to the file's current text (`None` = missing); returns the new text, or `None` when the file is deleted.
pub fn apply_file_patch(current: Option<&str>, fp: &FilePatch) -> Result<Option<String>> {
    let path = fp.path();
    let kind = fp.kind();
    let old_text = match (kind, current) {
        (ChangeKind::Added, Some(_)) => return Err(invalid(format!("cannot add an existing path: {path}"))),
        (ChangeKind::Added, None) => "",
        (_, None) => return Err(invalid(format!("cannot modify a missing path: {path}"))),
        (_, Some(t)) => t,
    };
    let old = split_lines(old_text);
    let mut out: Vec<(&str, bool)> = Vec::with_capacity(old.len());
    let mut pos = 0usize;
    for (n, hunk) in fp.hunks.iter().enumerate() {
        let where_ = || format!("for {path} at hunk {} ({})", n + 1, hunk.header());
        // A hunk with no old lines inserts *after* line `old_start`; otherwise it starts at it.
        let start = if hunk.old_count == 0 { hunk.old_start } else { hunk.old_start.saturating_sub(1) };
        if start < pos {
            return Err(invalid(format!("patch hunks overlap or are out of order {}", where_())));
        }
        if start > old.len() {
            return Err(invalid(format!("patch hunk is out of range {}", where_())));
        }
        out.extend_from_slice(&old[pos..start]);
        pos = start;
        for line in &hunk.lines {
            match line.kind {
                LineKind::Context | LineKind::Removed => {
                    let Some(&(have, have_nl)) = old.get(pos) else {
                        return Err(invalid(format!("patch hunk is out of range {}", where_())));
                    };
                    if have != line.text || have_nl != line.newline {
                        return Err(invalid(format!(
                            "patch context does not match {}: line {} is {}, the patch expects {}",
                            where_(),
                            pos + 1,
                            describe(have, have_nl),
                            describe(&line.text, line.newline)
                        )));
                    }
                    if line.kind == LineKind::Context {
                        out.push(old[pos]);
                    }
                    pos += 1;
                }
                LineKind::Added => out.push((line.text.as_str(), line.newline)),
            }
        }
    }
    out.extend_from_slice(&old[pos..]);
    if out.iter().rev().skip(1).any(|(_, nl)| !nl) {
        return Err(invalid(format!("patch for {path} leaves a line without a newline before the end of the file")));
    }
    if kind == ChangeKind::Deleted {
        if !out.is_empty() {
            return Err(invalid(format!("patch deletes {path} but does not remove all of its lines")));
        }
        return Ok(None);
    }
    let mut text = String::with_capacity(old_text.len() + 64);
    for (body, nl) in out {
        text.push_str(body);
        if nl {
            text.push('\n');
        }
    }
    Ok(Some(text))
}

/// A line for error messages: quoted, shortened, with its missing newline spelled out.
fn describe(text: &str, newline: bool) -> String {
    let q = format!("{:?}", shorten(text));
    if newline {
        q
    } else {
        format!("{q} (no newline at end of file)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    fn msg<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(v) => panic!("expected an error, got {v:?}"),
        }
    }

    fn apply_all(patch: &str, files: &[(&str, &str)]) -> Result<Vec<(String, Option<String>)>> {
        let mut out = Vec::new();
        for fp in parse_patch(patch)? {
            let cur = files.iter().find(|(p, _)| *p == fp.path()).map(|(_, t)| *t);
            out.push((fp.path().to_string(), apply_file_patch(cur, &fp)?));
        }
        Ok(out)
    }

    #[test]
    fn plain_unified_diff() {
        let patch = "--- a/src/a.py\t2024-01-01 00:00:00\n+++ b/src/a.py\t2024-01-02\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n";
        let files = parse_patch(patch).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path(), "/workspace/src/a.py");
        assert_eq!(files[0].status(), "modified");
        let out = apply_all(patch, &[("/workspace/src/a.py", "one\ntwo\nthree\n")]).unwrap();
        assert_eq!(out[0].1.as_deref(), Some("one\nTWO\nthree\n"));
    }

    #[test]
    fn no_newline_markers_are_honoured() {
        // Gaining a trailing newline.
        let gain = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n";
        assert_eq!(apply_all(gain, &[("/workspace/f", "a\nb")]).unwrap()[0].1.as_deref(), Some("a\nb\n"));
        // The marker matters when matching: the file has a newline, the patch says none.
        let e = msg(apply_all(gain, &[("/workspace/f", "a\nb\n")]));
        assert!(e.contains("patch context does not match for /workspace/f at hunk 1 (@@ -1,2 +1,2 @@)"), "{e}");
        assert!(e.contains("(no newline at end of file)"), "{e}");
        // Losing it.
        let lose = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n+b\n\\ No newline at end of file\n";
        assert_eq!(apply_all(lose, &[("/workspace/f", "a\nb\n")]).unwrap()[0].1.as_deref(), Some("a\nb"));
    }

    #[test]
    fn git_headers_are_accepted_and_modes_recorded() {
        let patch = "diff --git a/new.sh b/new.sh\nnew file mode 100755\nindex 0000000..1a24852\n--- /dev/null\n+++ b/new.sh\n@@ -0,0 +1 @@\n+#!/bin/sh\n\ndiff --git a/old.txt b/old.txt\ndeleted file mode 100644\nindex 2fa992c..0000000\n--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-keep\ndiff --git a/run b/run\nold mode 100644\nnew mode 100755\n--- a/run\n+++ b/run\n@@ -1 +1 @@\n-x\n+y\n";
        let files = parse_patch(patch).unwrap();
        assert_eq!(files.iter().map(|f| f.status()).collect::<Vec<_>>(), ["added", "deleted", "modified"]);
        assert_eq!(files[0].new_mode, Some(0o100755));
        assert_eq!(files[1].old_mode, Some(0o100644));
        assert_eq!((files[2].old_mode, files[2].new_mode), (Some(0o100644), Some(0o100755)));
        let out = apply_all(patch, &[("/workspace/old.txt", "keep\n"), ("/workspace/run", "x\n")]).unwrap();
        assert_eq!(out[0].1.as_deref(), Some("#!/bin/sh\n"));
        assert_eq!(out[1].1, None);
        assert_eq!(out[2].1.as_deref(), Some("y\n"));
    }

    #[test]
    fn header_only_sections_create_and_delete_empty_files() {
        let patch = "diff --git a/dir with space/e b/dir with space/e\nnew file mode 100644\nindex 0000000..e69de29\ndiff --git \"a/q\\\"x\" \"b/q\\\"x\"\ndeleted file mode 100644\n";
        let files = parse_patch(patch).unwrap();
        assert_eq!(files[0].path(), "/workspace/dir with space/e");
        assert_eq!(files[0].kind(), ChangeKind::Added);
        assert_eq!(apply_file_patch(None, &files[0]).unwrap().as_deref(), Some(""));
        assert_eq!(files[1].path(), "/workspace/q\"x");
        assert_eq!(apply_file_patch(Some(""), &files[1]).unwrap(), None);
        assert!(msg(apply_file_patch(Some("data\n"), &files[1])).contains("does not remove all of its lines"));
        let mode_only = "diff --git a/x b/x\nold mode 100644\nnew mode 100755\n";
        assert!(msg(parse_patch(mode_only)).starts_with("unsupported patch feature: mode-only change"));
    }

    #[test]
    fn quoted_names_and_trailing_tabs() {
        let patch = "--- \"a/\\303\\274mlaut\\t.txt\"\n+++ \"b/\\303\\274mlaut\\t.txt\"\n@@ -1 +1 @@\n-u\n+v\n--- a/sp ace.txt\t\n+++ b/sp ace.txt\t\n@@ -1 +1 @@\n-a\n+b\n";
        let files = parse_patch(patch).unwrap();
        assert_eq!(files[0].path(), "/workspace/ümlaut\t.txt");
        assert_eq!(files[1].path(), "/workspace/sp ace.txt");
    }

    #[test]
    fn unsupported_features_and_malformed_patches() {
        let cases = [
            ("", "patch must not be empty"),
            ("\n \n", "patch must not be empty"),
            ("hello\n", "patch line 1: not part of a unified diff: hello"),
            (
                "diff --git a/x b/y\nsimilarity index 90%\nrename from x\n",
                "unsupported patch feature: similarity index 90%",
            ),
            ("diff --git a/x b/y\ncopy from x\n", "unsupported patch feature: copy from x"),
            (
                "diff --git a/b b/b\nindex 1..2\nBinary files a/b and b/b differ\n",
                "unsupported patch feature: Binary files",
            ),
            ("diff --git a/b b/b\nGIT binary patch\nliteral 1\n", "unsupported patch feature: GIT binary patch"),
            ("diff --git a/l b/l\nnew file mode 120000\n", "unsupported patch feature: file mode 120000"),
            ("--- a/x\n+++ b/y\n@@ -1 +1 @@\n-a\n+b\n", "rename and copy patches are not supported"),
            ("--- a/x\n+++ b/x\n", "patch for /workspace/x contains no hunks"),
            ("--- a/x\n@@ -1 +1 @@\n", "patch line 1: '--- ' must be followed by a '+++ ' line"),
            ("@@ -1 +1 @@\n-a\n+b\n", "hunk without a file header"),
            (
                "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-a\n+b\n",
                "patch hunk line counts do not match the header for /workspace/x at hunk 1 (@@ -1,2 +1,2 @@)",
            ),
            (
                "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n+c\n",
                "patch hunk line counts do not match the header for /workspace/x at hunk 1",
            ),
            (
                "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n",
                "patch contains duplicate file entries for /workspace/x",
            ),
            (
                "--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n",
                "workspace path must stay inside /workspace",
            ),
            ("--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", "workspace path must stay inside /workspace"),
            ("--- /dev/null\n+++ /dev/null\n@@ -0,0 +1 @@\n+a\n", "/dev/null on both sides"),
            (
                "diff --git a/x b/x\nnew file mode 100644\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n",
                "old side is not /dev/null",
            ),
            ("--- a/x\n+++ b/x\n@@ -1 +1 @@\n\\ No newline at end of file\n-a\n+b\n", "must follow a hunk line"),
            ("--- a/x\n+++ b/x\n@@ -x +1 @@\n-a\n+b\n", "invalid hunk header"),
        ];
        for (patch, want) in cases {
            let got = msg(parse_patch(patch));
            assert!(got.contains(want), "{patch:?}: {got} !~ {want}");
        }
    }

    #[test]
    fn application_is_strict_and_names_the_hunk() {
        let patch = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n-a\n+A\n b\n@@ -10,3 +10,4 @@\n j\n k\n+new\n l\n";
        let text: String = "abcdefghijklmn".chars().map(|c| format!("{c}\n")).collect();
        let out = apply_all(patch, &[("/workspace/f", &text)]).unwrap();
        assert!(out[0].1.as_deref().unwrap().starts_with("A\nb\nc\n"));
        assert!(out[0].1.as_deref().unwrap().contains("k\nnew\nl\n"));
        // Same lines one position off: no offset search.
        let shifted = format!("x\n{text}");
        let e = msg(apply_all(patch, &[("/workspace/f", &shifted)]));
        assert!(e.starts_with("patch context does not match for /workspace/f at hunk 1 (@@ -1,2 +1,2 @@)"), "{e}");
        let second_off = text.replace("k\n", "K\n");
        let e = msg(apply_all(patch, &[("/workspace/f", &second_off)]));
        assert!(
            e.starts_with(
                "patch context does not match for /workspace/f at hunk 2 (@@ -10,3 +10,4 @@): line 11 is \"K\""
            ),
            "{e}"
        );
        let e = msg(apply_all(patch, &[("/workspace/f", "a\nb\n")]));
        assert!(e.contains("patch hunk is out of range for /workspace/f at hunk 2"), "{e}");
        let backwards = "--- a/f\n+++ b/f\n@@ -3 +3 @@\n-c\n+C\n@@ -1 +1 @@\n-a\n+A\n";
        assert!(msg(apply_all(backwards, &[("/workspace/f", &text)])).contains("overlap or are out of order"));
        assert_eq!(msg(apply_all(patch, &[])), "cannot modify a missing path: /workspace/f");
        let add = "--- /dev/null\n+++ b/f\n@@ -0,0 +1 @@\n+x\n";
        assert_eq!(msg(apply_all(add, &[("/workspace/f", "")])), "cannot add an existing path: /workspace/f");
    }

    #[test]
    fn zero_context_insertions_and_blank_context_lines() {
        // `-U0` insertion after line 2.
        let patch = "--- a/f\n+++ b/f\n@@ -2,0 +3 @@\n+inserted\n";
        assert_eq!(
            apply_all(patch, &[("/workspace/f", "1\n2\n3\n")]).unwrap()[0].1.as_deref(),
            Some("1\n2\ninserted\n3\n")
        );
        // An empty context line whose leading space was stripped.
        let patch = "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\n\n-c\n+C\n";
        assert_eq!(apply_all(patch, &[("/workspace/f", "a\n\nc\n")]).unwrap()[0].1.as_deref(), Some("a\n\nC\n"));
        // CRLF files keep their carriage returns.
        let patch = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\r\n-b\r\n+B\r\n";
        assert_eq!(apply_all(patch, &[("/workspace/f", "a\r\nb\r\n")]).unwrap()[0].1.as_deref(), Some("a\r\nB\r\n"));
    }

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "core.quotepath=true",
                "-c",
                "diff.noprefix=false",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn have_git() -> bool {
        let ok = Command::new("git").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
        if !ok {
            eprintln!("git not found: skipping the real git round-trip");
        }
        ok
    }

    #[test]
    fn round_trips_real_git_diff_output() {
        if !have_git() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let write = |p: &str, t: &str| {
            let p = d.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        };
        let long: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        let before: Vec<(&str, String)> = vec![
            ("src/main.py", long.clone()),
            ("gone.txt", "bye\n".into()),
            ("gone_empty.txt", String::new()),
            ("loses_nl.txt", "a\nb\n".into()),
            ("gains_nl.txt", "a\nb".into()),
            ("dir with space/f.txt", "x\n".into()),
            ("ümlaut.txt", "u\n".into()),
            ("tool.sh", "#!/bin/sh\necho 1\n".into()),
        ];
        for (p, t) in &before {
            write(p, t);
        }
        git(d, &["init", "-q"]);
        git(d, &["add", "-A"]);
        git(d, &["commit", "-qm", "base"]);
        let after_main = long.replace("line 3\n", "line three\n").replace("line 30\n", "line 30\nline 30.5\n");
        write("src/main.py", &after_main);
        std::fs::remove_file(d.join("gone.txt")).unwrap();
        std::fs::remove_file(d.join("gone_empty.txt")).unwrap();
        write("loses_nl.txt", "a\nb");
        write("gains_nl.txt", "a\nb\n");
        write("dir with space/f.txt", "y\n");
        write("ümlaut.txt", "ü\n");
        write("tool.sh", "#!/bin/sh\necho 2\n");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("tool.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        write("new/added.txt", "fresh\nfile");
        write("new/empty.txt", "");
        git(d, &["add", "-A"]);
        let patch = git(d, &["diff", "--cached", "--no-renames"]);
        let files = parse_patch(&patch).unwrap();
        assert_eq!(files.len(), 10, "{patch}");
        let current = |p: &str| before.iter().find(|(n, _)| format!("/workspace/{n}") == p).map(|(_, t)| t.as_str());
        for fp in &files {
            let rel = fp.path().strip_prefix("/workspace/").unwrap();
            let result = apply_file_patch(current(fp.path()), fp).unwrap();
            let expected = std::fs::read_to_string(d.join(rel)).ok();
            assert_eq!(result, expected, "{rel}");
        }
        let tool = files.iter().find(|f| f.path() == "/workspace/tool.sh").unwrap();
        assert_eq!((tool.old_mode, tool.new_mode), (Some(0o100644), Some(0o100755)));
    }

    #[test]
    fn a_failing_hunk_changes_nothing() {
        let patch = "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+A\n@@ -3 +3 @@\n-nope\n+C\n";
        let fp = &parse_patch(patch).unwrap()[0];
        let original = "a\nb\nc\n";
        let e = msg(apply_file_patch(Some(original), fp));
        assert!(e.starts_with("patch context does not match for /workspace/f at hunk 2 (@@ -3,1 +3,1 @@)"), "{e}");
        assert_eq!(original, "a\nb\nc\n");
    }
}
