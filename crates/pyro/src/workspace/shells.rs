//! PTY shells in a started workspace.
//!
//! The PTY, the process and the output ring live in the guest agent; the host keeps a small
//! record per shell (`shells/<id>.json`: geometry, cwd, times) for the payloads. Output is
//! redacted in the guest before it is stored, so a cursor never points into a secret.

use super::store::WorkspaceDir;
use super::{secrets, WORKSPACE_PATH};
use crate::defaults;
use crate::util::now_f64;
use crate::{Error, ExecutionMode, Pyro, Result};
use pyro_protocol::session::{ShellRequest, ShellResponse, ShellStatus};
use pyro_tree::paths::normalize_destination;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Widest terminal a shell may have, in columns (`cols` is 1..=this).
pub const MAX_COLS: u16 = 1000;
/// Tallest terminal a shell may have, in rows (`rows` is 1..=this).
pub const MAX_ROWS: u16 = 500;
/// Most terminal cells (screen + scrollback) a `plain` rendering holds: its memory is about
/// 16 bytes a cell, so 2 Mi cells ≈ 32 MiB whatever the output. Scrollback gets what the
/// screen leaves (17 446 lines at 120×30, 1 597 at 1000×500); older lines are dropped and
/// the read says `truncated`.
pub const RENDER_MAX_CELLS: usize = 2 * 1024 * 1024;
/// Most lines (screen + scrollback) a `plain` rendering holds: each line also costs ~100
/// bytes of its own, which matters for narrow terminals.
pub const RENDER_MAX_LINES: usize = 20_000;
/// Largest `wait_for_idle_ms` of `read_shell`.
pub const MAX_WAIT_FOR_IDLE_MS: u64 = 10_000;
/// Time allowed for a shell request beyond any idle wait it asks for.
const SHELL_CALL_SLACK: Duration = Duration::from_secs(30);

/// Options of `open_shell`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OpenShellOptions {
    /// Directory the shell starts in, `/workspace` or below (default `/workspace`); it must exist.
    pub cwd: String,
    /// Terminal width in columns, 1..=1000 (default 120).
    pub cols: u16,
    /// Terminal height in rows, 1..=500 (default 30).
    pub rows: u16,
    /// {SECRET_NAME: ENV_VAR}: secrets exported into the shell's environment.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
}

impl Default for OpenShellOptions {
    fn default() -> Self {
        OpenShellOptions {
            cwd: WORKSPACE_PATH.into(),
            cols: defaults::SHELL_COLS,
            rows: defaults::SHELL_ROWS,
            secret_env: BTreeMap::new(),
        }
    }
}

/// Options of `read_shell`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReadShellOptions {
    /// Character offset into the shell's output to read from (0 = the beginning); use the previous
    /// `next_cursor` to continue.
    pub cursor: u64,
    /// Most characters to return, > 0 (default 65536).
    pub max_chars: u64,
    /// Render through a terminal emulator: cursor movement, erasures and colours resolved.
    pub plain: bool,
    /// Return only once output has been quiet this long (1..=10000 ms).
    pub wait_for_idle_ms: Option<u64>,
}

impl Default for ReadShellOptions {
    fn default() -> Self {
        ReadShellOptions { cursor: 0, max_chars: defaults::SHELL_MAX_CHARS, plain: false, wait_for_idle_ms: None }
    }
}

/// Shell payload (keys pinned in crates/pyro/tests/contract.rs; `backend` is pyro's
/// addition).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ShellInfo {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Id of the shell (12 lowercase hex characters).
    pub shell_id: String,
    /// Directory the shell started in.
    pub cwd: String,
    /// Terminal width in columns.
    pub cols: u16,
    /// Terminal height in rows.
    pub rows: u16,
    /// `running` or `stopped`.
    pub state: String,
    /// When it was opened, Unix seconds (fractional).
    pub started_at: f64,
    /// When it was first seen ended, Unix seconds; `None` while running.
    pub ended_at: Option<f64>,
    /// Exit status of the shell once it ended; `None` while running.
    pub exit_code: Option<i32>,
    /// `guest_vsock`.
    pub execution_mode: ExecutionMode,
    /// Backend that runs the VM: `qemu`.
    pub backend: String,
    /// `true` when the workspace was paused and this call resumed it first (the key is
    /// absent otherwise; never stored).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed_from_pause: bool,
}

/// Payload of `read_shell`: the shell's fields plus a slice of its output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ShellReadResult {
    /// The shell's status; its fields appear at the top level of the JSON payload.
    #[serde(flatten)]
    pub shell: ShellInfo,
    /// Where this slice starts (moved forward past output the ring no longer holds).
    pub cursor: u64,
    /// Pass this as `cursor` to continue.
    pub next_cursor: u64,
    /// Output from `cursor` to `next_cursor` (rendered as plain text when `plain`), secret values
    /// redacted.
    pub output: String,
    /// More output exists past `next_cursor` (or the plain rendering was cut to `max_chars`).
    pub truncated: bool,
    /// Whether `output` was rendered through the terminal emulator.
    pub plain: bool,
    /// The idle wait that was asked for; `None` if none.
    pub wait_for_idle_ms: Option<u64>,
    /// Characters of output between the requested cursor and the oldest one still kept
    /// (each shell keeps its last 1 Mi characters).
    pub dropped_chars: u64,
}

/// Payload of `write_shell`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ShellWriteResult {
    /// The shell's status; its fields appear at the top level of the JSON payload.
    #[serde(flatten)]
    pub shell: ShellInfo,
    /// Characters of `input` sent (not counting the appended newline).
    pub input_length: usize,
    /// Whether a newline was sent after the input.
    pub append_newline: bool,
}

/// Payload of `signal_shell`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ShellSignalResult {
    /// The shell's status; its fields appear at the top level of the JSON payload.
    #[serde(flatten)]
    pub shell: ShellInfo,
    /// Signal sent, upper case: `HUP`, `INT`, `TERM` or `KILL`.
    pub signal: String,
}

/// Payload of `close_shell`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ShellCloseResult {
    /// The shell's final status; its fields appear at the top level of the JSON payload.
    #[serde(flatten)]
    pub shell: ShellInfo,
    /// Always `true` on success.
    pub closed: bool,
}

fn shells_dir(dir: &WorkspaceDir) -> PathBuf {
    dir.root.join("shells")
}

fn record_path(dir: &WorkspaceDir, shell_id: &str) -> PathBuf {
    shells_dir(dir).join(format!("{shell_id}.json"))
}

fn validate_shell_id(shell_id: &str) -> Result<()> {
    if shell_id.len() == 12 && shell_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(Error::NotFound(format!("unknown shell '{shell_id}': shell ids are 12 hex characters from shell open")))
    }
}

fn load(dir: &WorkspaceDir, shell_id: &str) -> Result<ShellInfo> {
    validate_shell_id(shell_id)?;
    let text = std::fs::read(record_path(dir, shell_id))
        .map_err(|_| Error::NotFound(format!("unknown shell '{shell_id}' in workspace '{}'", dir.id)))?;
    serde_json::from_slice(&text).map_err(|e| Error::unreadable(format_args!("shell record {shell_id}"), e))
}

fn save(dir: &WorkspaceDir, info: &ShellInfo) -> Result<()> {
    let path = record_path(dir, &info.shell_id);
    crate::util::create_private_dir(&shells_dir(dir)).map_err(|e| Error::io("creating the shells directory", e))?;
    crate::util::write_atomic(&path, &serde_json::to_vec_pretty(info).expect("serialisable"))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Drop every host shell record (the VM and its shells are gone).
pub(crate) fn forget_all(dir: &WorkspaceDir) {
    let _ = std::fs::remove_dir_all(shells_dir(dir));
}

/// Fold the guest's view into the record, stamping `ended_at` the first time it is seen.
fn apply_status(dir: &WorkspaceDir, mut info: ShellInfo, status: &ShellStatus) -> ShellInfo {
    if !status.running && info.state == "running" {
        info.state = "stopped".into();
        info.exit_code = status.exit_code;
        info.ended_at = Some(now_f64());
        let _ = save(dir, &info);
    }
    info
}

/// Check a terminal geometry against 1..=[`MAX_COLS`] × 1..=[`MAX_ROWS`].
pub fn validate_geometry(cols: u16, rows: u16) -> Result<()> {
    if !(1..=MAX_COLS).contains(&cols) || !(1..=MAX_ROWS).contains(&rows) {
        return Err(Error::InvalidInput(format!(
            "cols must be between 1 and {MAX_COLS} and rows between 1 and {MAX_ROWS} (got cols={cols}, rows={rows})"
        )));
    }
    Ok(())
}

/// Counts the lines the bounded scrollback dropped during one feed.
struct EvictionCount(usize);

impl avt::Observer for &mut EvictionCount {
    type Output = ();

    fn evicted(&mut self, _context: &mut avt::Observation<'_>, _line: &avt::Line) {
        self.0 += 1;
    }

    fn end(&mut self, _context: &mut avt::Observation<'_>) {}
}

/// Plain text of terminal output: fed through a real terminal emulator (avt) with the
/// shell's geometry, then read back as logical lines. Memory is bounded by
/// [`RENDER_MAX_CELLS`] whatever `raw` holds: scrollback is limited to what fits, older lines
/// are dropped, and the second value says whether any were.
pub fn render_plain(raw: &str, cols: u16, rows: u16) -> Result<(String, bool)> {
    validate_geometry(cols, rows)?;
    let (cols, rows) = (cols as usize, rows as usize);
    let scrollback = (RENDER_MAX_CELLS / cols).min(RENDER_MAX_LINES).saturating_sub(rows);
    let mut term = avt::Terminal::with_scrollback(cols, rows, Some(scrollback))
        .map_err(|e| Error::InvalidInput(format!("terminal size: {e:?}")))?;
    let mut evicted = EvictionCount(0);
    term.feed_with(raw, &mut evicted);
    let mut lines = term.primary_screen().text();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    Ok((lines.join("\n"), evicted.0 > 0))
}

/// First `max_chars` characters of `text`, and whether anything was cut.
fn first_chars(mut text: String, max_chars: u64) -> (String, bool) {
    match usize::try_from(max_chars).ok().and_then(|n| text.char_indices().nth(n)) {
        Some((at, _)) => {
            text.truncate(at);
            (text, true)
        }
        None => (text, false),
    }
}

impl Pyro {
    /// Open an interactive shell (`bash -i` on a PTY) in a started workspace.
    pub async fn open_shell(&self, workspace_id: &str, opts: OpenShellOptions) -> Result<ShellInfo> {
        validate_geometry(opts.cols, opts.rows)?;
        let cwd = normalize_destination(&opts.cwd)?;
        let dir = self.ws_dir(workspace_id)?;
        let (_life, record, resumed) = self.enter_started_call_resuming(&dir, "opening a shell").await?;
        let secret_values = secrets::load(&dir, &record.secrets)?;
        let env = secrets::env_for(&opts.secret_env, &secret_values)?;
        let shell_id = crate::util::new_id();
        let req = ShellRequest::Open {
            shell_id: shell_id.clone(),
            cwd: cwd.clone(),
            cols: opts.cols,
            rows: opts.rows,
            env,
            // Every secret, not only the exported ones: the shell can `cat /run/pyro-secrets/X`.
            redact: secret_values.iter().map(|(_, v)| v.clone()).collect(),
        };
        let answer =
            dir.machine().shell(req, SHELL_CALL_SLACK).await.map_err(|e| secrets::redact_error(e, &secret_values))?;
        if !matches!(answer, ShellResponse::Status(_)) {
            return Err(Error::Guest(format!("unexpected answer to shell open: {answer:?}")));
        }
        let info = ShellInfo {
            workspace_id: dir.id.clone(),
            shell_id,
            cwd,
            cols: opts.cols,
            rows: opts.rows,
            state: "running".into(),
            started_at: now_f64(),
            ended_at: None,
            exit_code: None,
            execution_mode: record.execution_mode,
            backend: record.backend.as_str().to_string(),
            resumed_from_pause: false,
        };
        save(&dir, &info)?;
        super::ops::touch_activity(&dir)?;
        Ok(ShellInfo { resumed_from_pause: resumed.is_some(), ..info })
    }

    /// Read shell output from `cursor`; see [`ReadShellOptions`].
    pub async fn read_shell(
        &self,
        workspace_id: &str,
        shell_id: &str,
        opts: ReadShellOptions,
    ) -> Result<ShellReadResult> {
        if opts.max_chars == 0 {
            return Err(Error::InvalidInput("max_chars must be greater than 0".into()));
        }
        if let Some(ms) = opts.wait_for_idle_ms {
            if ms == 0 || ms > MAX_WAIT_FOR_IDLE_MS {
                return Err(Error::InvalidInput(format!(
                    "wait_for_idle_ms must be between 1 and {MAX_WAIT_FOR_IDLE_MS}, got {ms}"
                )));
            }
        }
        let dir = self.ws_dir(workspace_id)?;
        let info = load(&dir, shell_id)?;
        let (_life, _record, resumed) = self.enter_started_call_resuming(&dir, "reading a shell").await?;
        let req = ShellRequest::Read {
            shell_id: shell_id.to_string(),
            cursor: opts.cursor,
            max_chars: opts.max_chars,
            wait_for_idle_ms: opts.wait_for_idle_ms,
        };
        let wait = Duration::from_millis(pyro_protocol::session::SHELL_IDLE_WAIT_CAP_MS) + SHELL_CALL_SLACK;
        let out = match dir.machine().shell(req, wait).await? {
            ShellResponse::Output(o) => o,
            other => return Err(Error::Guest(format!("unexpected answer to shell read: {other:?}"))),
        };
        let info = apply_status(&dir, info, &out.status);
        // The guest was asked for at most `max_chars` characters of a ring of
        // SHELL_RING_CHARS; a hostile one may send more, which is cut here, before rendering.
        let asked = opts.max_chars.min(pyro_protocol::session::SHELL_RING_CHARS);
        let (raw, raw_cut) = first_chars(out.output, asked);
        let (output, cut) = if opts.plain {
            let (text, dropped) = render_plain(&raw, info.cols, info.rows)?;
            let (text, cut) = first_chars(text, opts.max_chars);
            (text, raw_cut || dropped || cut)
        } else {
            (raw, raw_cut)
        };
        Ok(ShellReadResult {
            shell: ShellInfo { resumed_from_pause: resumed.is_some(), ..info },
            cursor: out.cursor,
            next_cursor: out.next_cursor,
            output,
            truncated: out.truncated || cut,
            plain: opts.plain,
            wait_for_idle_ms: opts.wait_for_idle_ms,
            dropped_chars: out.dropped_chars,
        })
    }

    /// Type `input` into the shell, followed by a newline unless `append_newline` is false.
    pub async fn write_shell(
        &self,
        workspace_id: &str,
        shell_id: &str,
        input: &str,
        append_newline: bool,
    ) -> Result<ShellWriteResult> {
        let dir = self.ws_dir(workspace_id)?;
        let info = load(&dir, shell_id)?;
        let (_life, record, resumed) = self.enter_started_call_resuming(&dir, "writing to a shell").await?;
        let mut data = input.to_string();
        if append_newline {
            data.push('\n');
        }
        let req = ShellRequest::Write { shell_id: shell_id.to_string(), input: data };
        let secret_values = secrets::load(&dir, &record.secrets)?;
        let status = match dir
            .machine()
            .shell(req, SHELL_CALL_SLACK)
            .await
            .map_err(|e| secrets::redact_error(e, &secret_values))?
        {
            ShellResponse::Status(s) => s,
            other => return Err(Error::Guest(format!("unexpected answer to shell write: {other:?}"))),
        };
        let info = apply_status(&dir, info, &status);
        super::ops::touch_activity(&dir)?;
        Ok(ShellWriteResult {
            shell: ShellInfo { resumed_from_pause: resumed.is_some(), ..info },
            input_length: input.chars().count(),
            append_newline,
        })
    }

    /// Send `HUP`, `INT`, `TERM` or `KILL` to the shell's foreground job and the shell.
    pub async fn signal_shell(
        &self,
        workspace_id: &str,
        shell_id: &str,
        signal_name: &str,
    ) -> Result<ShellSignalResult> {
        let name = signal_name.trim().to_ascii_uppercase();
        let signal = match name.as_str() {
            "HUP" => libc::SIGHUP,
            "INT" => libc::SIGINT,
            "TERM" => libc::SIGTERM,
            "KILL" => libc::SIGKILL,
            _ => {
                return Err(Error::InvalidInput(format!(
                    "signal must be one of HUP, INT, TERM, KILL, got '{signal_name}'"
                )))
            }
        };
        let dir = self.ws_dir(workspace_id)?;
        let info = load(&dir, shell_id)?;
        let (_life, _record, resumed) = self.enter_started_call_resuming(&dir, "signalling a shell").await?;
        let req = ShellRequest::Signal { shell_id: shell_id.to_string(), signal };
        let status = match dir.machine().shell(req, SHELL_CALL_SLACK).await? {
            ShellResponse::Status(s) => s,
            other => return Err(Error::Guest(format!("unexpected answer to shell signal: {other:?}"))),
        };
        let info = apply_status(&dir, info, &status);
        Ok(ShellSignalResult { shell: ShellInfo { resumed_from_pause: resumed.is_some(), ..info }, signal: name })
    }

    /// End the shell (HUP, then KILL after 2 s) and forget it.
    pub async fn close_shell(&self, workspace_id: &str, shell_id: &str) -> Result<ShellCloseResult> {
        let dir = self.ws_dir(workspace_id)?;
        let mut info = load(&dir, shell_id)?;
        let (_life, _record, resumed) = self.enter_started_call_resuming(&dir, "closing a shell").await?;
        let req = ShellRequest::Close { shell_id: shell_id.to_string() };
        match dir.machine().shell(req, SHELL_CALL_SLACK).await.map_err(Error::from) {
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let _ = std::fs::remove_file(record_path(&dir, shell_id));
        if info.state == "running" {
            info.state = "stopped".into();
            info.ended_at = Some(now_f64());
        }
        Ok(ShellCloseResult { shell: ShellInfo { resumed_from_pause: resumed.is_some(), ..info }, closed: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(raw: &str, cols: u16, rows: u16) -> String {
        let (text, dropped) = render_plain(raw, cols, rows).unwrap();
        assert!(!dropped);
        text
    }

    #[test]
    fn plain_rendering_resolves_colours_erasures_and_carriage_returns() {
        let raw =
            "\x1b[01;34mdir\x1b[0m  file\r\nprogress 10%\rprogress 100%\r\nabc\x08\x08X\x1b[K\r\n\x1b]0;title\x07done";
        let text = render(raw, 80, 24);
        assert_eq!(text, "dir  file\nprogress 100%\naX\ndone");
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn plain_rendering_honours_clear_screen() {
        let raw = "old line\r\n\x1b[H\x1b[2Jnew";
        let text = render(raw, 40, 5);
        assert!(text.ends_with("new"), "{text:?}");
    }

    #[test]
    fn geometry_is_checked_with_the_allowed_range_in_the_error() {
        assert!(validate_geometry(defaults::SHELL_COLS, defaults::SHELL_ROWS).is_ok());
        assert!(validate_geometry(MAX_COLS, MAX_ROWS).is_ok());
        assert!(validate_geometry(1, 1).is_ok());
        for (c, r) in [(0, 30), (120, 0), (MAX_COLS + 1, 30), (120, MAX_ROWS + 1), (u16::MAX, u16::MAX)] {
            let e = validate_geometry(c, r).unwrap_err().to_string();
            assert!(e.contains("cols must be between 1 and 1000 and rows between 1 and 500"), "{e}");
            assert!(render_plain("x", c, r).is_err());
        }
    }

    #[test]
    fn scrollback_past_the_cell_budget_keeps_the_newest_lines_and_says_so() {
        let raw: String = (0..40_000).map(|i| format!("line {i}\r\n")).collect();
        let (text, dropped) = render_plain(&raw, 120, 30).unwrap();
        assert!(dropped);
        assert!(text.ends_with("line 39999"), "{}", &text[text.len() - 40..]);
        assert!(!text.contains("line 0\n"));
        let kept = text.lines().count();
        assert!(kept <= RENDER_MAX_CELLS / 120 && kept > 10_000, "{kept}");
        let (text, dropped) = render_plain("a\r\nb", 120, 30).unwrap();
        assert_eq!((text.as_str(), dropped), ("a\nb", false));
    }

    #[test]
    fn first_chars_cuts_on_characters() {
        assert_eq!(first_chars("héllo".into(), 2), ("hé".to_string(), true));
        assert_eq!(first_chars("hé".into(), 2), ("hé".to_string(), false));
        assert_eq!(first_chars("hé".into(), u64::MAX), ("hé".to_string(), false));
    }

    /// The worst inputs for the renderer: a full ring (1 Mi characters) at the largest and
    /// the narrowest geometry, of newlines (one line each) and of wide characters.
    const RENDER_CASES: &[(&str, u16, u16)] = &[
        ("newlines", MAX_COLS, MAX_ROWS),
        ("wide", MAX_COLS, MAX_ROWS),
        ("newlines", defaults::SHELL_COLS, defaults::SHELL_ROWS),
        ("narrow", 1, 1),
    ];
    /// Peak resident memory allowed to the whole child process rendering one case.
    const RENDER_PEAK_RSS_LIMIT_KIB: u64 = 96 * 1024;

    /// Run by `plain_rendering_of_a_full_ring_stays_under_the_memory_limit` in a child process
    /// (so its peak RSS is the rendering's alone); prints `VmHWM_KIB=N`.
    #[test]
    #[ignore = "child process of plain_rendering_of_a_full_ring_stays_under_the_memory_limit"]
    fn render_worst_case_child() {
        let Ok(case) = std::env::var("PYRO_RENDER_CASE") else { return };
        // A regression must fail this test, not take the machine's memory: 2 GiB of address
        // space, then allocations fail (and the child aborts).
        let limit = libc::rlimit { rlim_cur: 2 << 30, rlim_max: 2 << 30 };
        // SAFETY: `limit` is a valid rlimit that outlives the call; setrlimit only reads it.
        unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
        let (kind, cols, rows) = RENDER_CASES.iter().find(|c| format!("{}-{}x{}", c.0, c.1, c.2) == case).unwrap();
        let n = pyro_protocol::session::SHELL_RING_CHARS as usize;
        let raw: String = match *kind {
            "newlines" => "\n".repeat(n),
            "wide" => "字".repeat(n),
            _ => "x\n".repeat(n / 2),
        };
        let (text, _) = render_plain(&raw, *cols, *rows).unwrap();
        drop((raw, text));
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap();
        println!("VmHWM_KIB={}", hwm.trim().trim_end_matches("kB").trim());
    }

    #[test]
    fn plain_rendering_of_a_full_ring_stays_under_the_memory_limit() {
        for (kind, cols, rows) in RENDER_CASES {
            let case = format!("{kind}-{cols}x{rows}");
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "workspace::shells::tests::render_worst_case_child", "--ignored"])
                .args(["--nocapture", "--test-threads=1"])
                .env("PYRO_RENDER_CASE", &case)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{case}: child failed ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let kib: u64 = text
                .lines()
                .find_map(|l| l.split_once("VmHWM_KIB=").map(|(_, n)| n.trim()))
                .unwrap_or_else(|| panic!("{case}: no measurement: {text}"))
                .parse()
                .unwrap();
            eprintln!("{case}: peak RSS {} MiB", kib / 1024);
            assert!(kib <= RENDER_PEAK_RSS_LIMIT_KIB, "{case}: peak RSS {kib} KiB > {RENDER_PEAK_RSS_LIMIT_KIB} KiB");
        }
    }

    #[test]
    fn shell_ids_are_checked_before_any_path_is_built() {
        assert!(validate_shell_id("../../etc").is_err());
        assert!(validate_shell_id("0123456789ab").is_ok());
    }
}
