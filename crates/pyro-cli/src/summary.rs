//! `pyro workspace summary`: the review payload rendered for a terminal (80 columns; long
//! lists are cut with a count of what was left out). `--json` prints the payload itself.

use pyro::workspace::WorkspaceSummary;

/// Width the text is cut to.
const WIDTH: usize = 80;
/// Rows shown at most per list (commands, changed paths, events).
const MAX_ROWS: usize = 10;

/// `s` cut to `width` characters, an ellipsis marking the cut.
fn fit(s: &str, width: usize) -> String {
    let one_line = s.replace(['\n', '\r', '\t'], " ");
    if one_line.chars().count() <= width {
        return one_line;
    }
    one_line.chars().take(width.saturating_sub(1)).collect::<String>() + "…"
}

fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h{:02}m ago", s / 3600, (s % 3600) / 60),
        _ => format!("{}d ago", s / 86400),
    }
}

fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// Up to [`MAX_ROWS`] rows, the last ones when `newest`, plus a line counting the rest.
fn rows(out: &mut Vec<String>, items: Vec<String>, newest: bool) {
    let n = items.len();
    let (skip, take) = if n > MAX_ROWS && newest { (n - MAX_ROWS, MAX_ROWS) } else { (0, MAX_ROWS) };
    if n > MAX_ROWS && newest {
        out.push(format!("  … {} earlier not shown", n - MAX_ROWS));
    }
    for i in items.into_iter().skip(skip).take(take) {
        out.push(fit(&format!("  {i}"), WIDTH));
    }
    if n > MAX_ROWS && !newest {
        out.push(format!("  … and {} more", n - MAX_ROWS));
    }
}

/// The lines of the human rendering (each at most [`WIDTH`] characters).
pub fn render(s: &WorkspaceSummary, now: f64) -> Vec<String> {
    let mut out = Vec::new();
    let name = s.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
    out.push(fit(&format!("Workspace {}{name}: {}", s.workspace_id, s.state.as_str()), WIDTH));
    out.push(format!("Since {} {}", s.since_kind, age(now - s.since)));
    if let Some(r) = &s.reset {
        out.push(fit(&format!("  reset to snapshot '{}'", r.event.snapshot_name), WIDTH));
    }

    let c = &s.commands;
    out.push(format!("Commands: {} run, {} failed", c.total, c.failed));
    rows(
        &mut out,
        c.entries
            .iter()
            .map(|e| {
                format!("#{:<4} exit {:<3} {:>7}  {}", e.sequence, e.exit_code, duration(e.duration_ms), e.command)
            })
            .collect(),
        true,
    );

    match (&s.diff, &s.diff_error) {
        (Some(d), _) if !d.changed => out.push("Changes: none (same as the baseline)".into()),
        (Some(d), _) => {
            let m = &d.summary;
            out.push(fit(
                &format!(
                    "Changes: {} path(s): {} added, {} modified, {} deleted{}; +{} -{} lines",
                    m.total,
                    m.added,
                    m.modified,
                    m.deleted,
                    if m.type_changed > 0 { format!(", {} type changed", m.type_changed) } else { String::new() },
                    d.lines_added,
                    d.lines_removed
                ),
                WIDTH,
            ));
            let mark = |st: &str| match st {
                "added" => "A",
                "modified" => "M",
                "deleted" => "D",
                _ => "T",
            };
            rows(&mut out, d.entries.iter().map(|e| format!("{} {}", mark(&e.status), e.path)).collect(), false);
        }
        (None, err) => out.push(fit(&format!("Changes: unknown ({})", err.as_deref().unwrap_or("no diff")), WIDTH)),
    }

    // Oldest first across kinds, so the list reads as what happened.
    let mut events: Vec<(f64, String)> = Vec::new();
    for e in &s.syncs {
        events.push((e.at, format!("sync   {} -> {}", e.event.source_path, e.event.destination)));
    }
    for e in &s.file_writes {
        events.push((e.at, format!("write  {} ({} bytes)", e.event.path, e.event.bytes_written)));
    }
    for e in &s.patches {
        let p = &e.event;
        events
            .push((e.at, format!("patch  +{} ~{} -{} files: {}", p.added, p.modified, p.deleted, p.paths.join(", "))));
    }
    for e in &s.exports {
        let what = e.event.workspace_path.as_deref().unwrap_or("disk");
        events.push((e.at, format!("export {what} -> {}", e.event.output_path)));
    }
    for e in &s.services.started {
        events.push((e.at, format!("service start {}", e.event.service_name)));
    }
    for e in &s.services.stopped {
        events.push((e.at, format!("service stop  {}", e.event.service_name)));
    }
    for e in &s.snapshots.created {
        events.push((e.at, format!("snapshot create {}", e.event.snapshot_name)));
    }
    for e in &s.snapshots.deleted {
        events.push((e.at, format!("snapshot delete {}", e.event.snapshot_name)));
    }
    for e in &s.background_commands {
        events.push((e.at, format!("background {} {} {}", e.event.command_id, e.event.status, e.event.command)));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    out.push(format!(
        "Operations: {} sync, {} file write, {} patch, {} export",
        s.syncs.len(),
        s.file_writes.len(),
        s.patches.len(),
        s.exports.len()
    ));
    out.push(format!(
        "  services started {}, stopped {}; snapshots created {}, deleted {}",
        s.services.started.len(),
        s.services.stopped.len(),
        s.snapshots.created.len(),
        s.snapshots.deleted.len()
    ));
    rows(&mut out, events.into_iter().map(|e| e.1).collect(), true);
    if !s.events_complete {
        out.push(fit(
            &format!("Note: the operation record is partial ({} oldest dropped, or a write failed)", s.events_dropped),
            WIDTH,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyro::workspace::events::{FileWriteEvent, Timed};
    use pyro::workspace::{SummaryCommand, SummaryCommands, SummaryServices, SummarySnapshots};

    #[test]
    fn long_lists_and_lines_fit_a_terminal() {
        let s = WorkspaceSummary {
            workspace_id: "abc123def456".into(),
            name: Some("n".repeat(200)),
            state: pyro::WorkspaceState::Stopped,
            since: 100.0,
            since_kind: "create".into(),
            syncs: vec![],
            file_writes: (0..30)
                .map(|i| Timed {
                    at: 1.0,
                    event: FileWriteEvent { path: format!("/workspace/{}{i}", "d/".repeat(50)), bytes_written: 1 },
                })
                .collect(),
            patches: vec![],
            exports: vec![],
            services: SummaryServices::default(),
            snapshots: SummarySnapshots::default(),
            reset: None,
            background_commands: vec![],
            commands: SummaryCommands {
                total: 25,
                failed: 1,
                entries: (1..=25)
                    .map(|i| SummaryCommand {
                        sequence: i,
                        command: format!("make test {}", "x".repeat(100)),
                        exit_code: (i == 3) as i32,
                        duration_ms: 1500,
                        recorded_at: 1.0,
                    })
                    .collect(),
            },
            diff: None,
            diff_error: Some("workspace is stopped; start it to see the diff".into()),
            events_complete: true,
            events_dropped: 0,
        };
        let lines = render(&s, 3700.0);
        for l in &lines {
            assert!(l.chars().count() <= WIDTH, "{l}");
        }
        let text = lines.join("\n");
        assert!(text.contains("Commands: 25 run, 1 failed"), "{text}");
        assert!(text.contains("… 15 earlier not shown"), "{text}");
        assert!(text.contains("#25"), "the newest command is shown: {text}");
        assert!(text.contains("… 20 earlier not shown"), "{text}");
        assert!(text.contains("Since create 1h00m ago"), "{text}");
        assert!(text.contains("Changes: unknown (workspace is stopped"), "{text}");
        assert!(lines.len() < 40, "{}", lines.len());
    }
}
