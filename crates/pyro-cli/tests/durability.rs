//! Durability: every pyro call that changes `/workspace` has made its change durable by the
//! time it answers. Each acknowledged call is followed at once by a SIGKILL of the workspace's
//! QEMU (no clean shutdown, no guest sync); the workspace is then started again and must hold
//! every acknowledged change, on an ext4 image that `e2fsck` finds clean.
//!
//! Two workspaces run side by side (one per thread, so a 2-core host boots them in parallel):
//! one takes file writes, patches, sync pushes and `exec --sync`; the other alternates
//! `reset --snapshot s1` and plain resets. Each kind of call is killed after 20 times (exec
//! --sync 5 times).

mod common;

use common::{ok, stderr, stdout, TestHome};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set when either side failed: the other stops at its next round instead of booting on.
static FAILED: AtomicBool = AtomicBool::new(false);

const ROUNDS_PER_KIND: usize = 20;
const EXEC_SYNC_ROUNDS: usize = 5;

/// Files of `/workspace` (path relative to it -> content without trailing newlines).
type Tree = BTreeMap<String, String>;

fn runtime_dir(home: &TestHome, id: &str) -> PathBuf {
    home.path().join("workspaces").join(id).join("runtime")
}

fn vmm_pid(home: &TestHome, id: &str) -> i32 {
    let path = runtime_dir(home, id).join("supervisor.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["vmm_pid"].as_i64().expect("vmm_pid") as i32
}

/// Gone, or a zombie (dead; its parent has not reaped it yet).
fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// SIGKILL the workspace's QEMU and wait until it is dead: nothing of the guest's memory
/// (page cache, unwritten journal) survives, only what already reached the image file.
fn kill_vmm(home: &TestHome, id: &str) {
    let pid = vmm_pid(home, id);
    assert!(pid > 1 && !is_dead(pid), "QEMU of {id} is not running (pid {pid})");
    // SAFETY: kill(2) on the QEMU process this test's workspace runs.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_dead(pid) {
        assert!(Instant::now() < deadline, "QEMU {pid} survived SIGKILL");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `e2fsck -fn` on an image no VM has open; exit 0 means no inconsistency. `replay_journal`
/// first replays the journal the way the guest kernel would at mount (a killed VM leaves
/// committed transactions there); without it the image must already be clean.
fn assert_fsck_clean(image: &Path, replay_journal: bool) {
    if replay_journal {
        let o = Command::new("e2fsck").args(["-E", "journal_only", "-y"]).arg(image).output().expect("e2fsck runs");
        assert!(o.status.success(), "journal replay failed: {}{}", stdout(&o), stderr(&o));
    }
    let o = Command::new("e2fsck").arg("-fn").arg(image).output().expect("e2fsck runs");
    assert!(o.status.success(), "e2fsck -fn {}: exit {:?}\n{}{}", image.display(), o.status, stdout(&o), stderr(&o));
}

/// Every regular file and symlink of `/workspace` with its content, read in the guest.
fn guest_tree(home: &TestHome, id: &str) -> Tree {
    let script = "cd /workspace && find . \\( -type f -o -type l \\) | sort | \
                  while IFS= read -r f; do printf '%s\\t%s\\n' \"${f#./}\" \"$(cat \"$f\" | tr '\\n' ' ')\"; done";
    let r = ok_vm(home, id, &["workspace", "exec", id, "--json", "--", "sh", "-c", script]);
    assert_eq!(r["exit_code"], 0, "listing /workspace failed: {r}");
    r["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .map(|l| {
            let (p, c) = l.split_once('\t').unwrap_or((l, ""));
            (p.to_string(), c.trim_end().to_string())
        })
        .collect()
}

fn seed_tree() -> Tree {
    let mut t = Tree::new();
    t.insert("p.txt".into(), "p0".into());
    for k in 0..8 {
        t.insert(format!("src/d{k}/f{k}.txt"), format!("seed {k}"));
    }
    t
}

fn write_tree(root: &Path, tree: &Tree) {
    for (path, content) in tree {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{content}\n")).unwrap();
    }
}

fn create(home: &TestHome, seed: &Path) -> String {
    let w = ok(
        home,
        &[
            "workspace",
            "create",
            "debian:12",
            "--mem-mib",
            "512",
            "--ttl-seconds",
            "3600",
            "--seed-path",
            &seed.display().to_string(),
            "--json",
        ],
    );
    w["workspace_id"].as_str().unwrap().to_string()
}

/// The tails of the workspace's console and supervisor logs, for failure messages.
fn vm_logs(home: &TestHome, id: &str) -> String {
    let rt = runtime_dir(home, id);
    let tail = |f: &str| {
        let text = std::fs::read_to_string(rt.join(f)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    format!("--- console.log ---\n{}\n--- supervisor.log ---\n{}", tail("console.log"), tail("supervisor.log"))
}

/// Like `common::ok`, with the VM's logs in the failure message.
fn ok_vm(home: &TestHome, id: &str, args: &[&str]) -> serde_json::Value {
    let o = home.run(args);
    assert!(o.status.success(), "{args:?} failed: {}{}\n{}", stdout(&o), stderr(&o), vm_logs(home, id));
    common::json(&o)
}

/// One round: the acknowledged call already ran; kill QEMU now, check the image, start again
/// and compare `/workspace` with what was acknowledged. Returns the start payload.
fn crash_and_check(home: &TestHome, id: &str, expected: &Tree, what: &str, round: usize) -> serde_json::Value {
    kill_vmm(home, id);
    // Every other round the host replays the journal and checks the image; the other rounds
    // leave the replay to the guest kernel, so both recovery paths are exercised.
    if round.is_multiple_of(2) {
        assert_fsck_clean(&runtime_dir(home, id).join("rootfs.ext4"), true);
    }
    eprintln!("[{id}] round {round}: {what} acknowledged, QEMU killed");
    let started = ok_vm(home, id, &["workspace", "start", id, "--json"]);
    assert_eq!(started["state"], "started");
    let found = guest_tree(home, id);
    assert_eq!(&found, expected, "after {what} (round {round}) and a SIGKILL of QEMU, /workspace lost changes");
    started
}

/// Modify `p.txt`, add `patched/pa<round>.txt`, delete the file the previous patch added.
fn patch_text(round: usize, prev: Option<usize>) -> String {
    let old = prev.unwrap_or(0);
    let mut p = format!("--- a/p.txt\n+++ b/p.txt\n@@ -1 +1 @@\n-p{old}\n+p{round}\n");
    p += &format!("--- /dev/null\n+++ b/patched/pa{round}.txt\n@@ -0,0 +1 @@\n+pa{round}\n");
    if let Some(prev) = prev {
        p += &format!("--- a/patched/pa{prev}.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-pa{prev}\n");
    }
    p
}

/// File writes, patches (modify + add + delete), sync pushes and `exec --sync`, each followed
/// by a SIGKILL of QEMU.
fn edits_survive(home: &TestHome, seed: &Path) -> Vec<(String, Duration)> {
    let id = create(home, seed);
    let mut expected = seed_tree();
    let mut timings = Vec::new();
    let mut last_patch = None;
    let rounds = 3 * ROUNDS_PER_KIND + EXEC_SYNC_ROUNDS;
    for round in 0..rounds {
        if FAILED.load(Ordering::SeqCst) {
            break;
        }
        let t = Instant::now();
        let kind = if round >= 3 * ROUNDS_PER_KIND {
            "exec --sync"
        } else {
            ["file write", "patch apply", "sync push"][round % 3]
        };
        match kind {
            "file write" => {
                // A new directory each time: its entry in the parent must be durable too.
                let path = format!("w/{round}/f.txt");
                let r = ok(home, &["workspace", "file", "write", &id, &path, "--text", &format!("w{round}"), "--json"]);
                assert_eq!(r["path"], format!("/workspace/{path}"));
                expected.insert(path, format!("w{round}"));
            }
            "patch apply" => {
                let patch = patch_text(round, last_patch);
                let r = ok(home, &["workspace", "patch", "apply", &id, &format!("--patch={patch}"), "--json"]);
                assert_eq!(r["changed"], true, "{r}");
                expected.insert("p.txt".into(), format!("p{round}"));
                expected.insert(format!("patched/pa{round}.txt"), format!("pa{round}"));
                if let Some(prev) = last_patch {
                    expected.remove(&format!("patched/pa{prev}.txt"));
                }
                last_patch = Some(round);
            }
            "sync push" => {
                let src = home.path().join(format!("push{round}"));
                let mut pushed = Tree::new();
                pushed.insert(format!("s{round}/a.txt"), format!("a{round}"));
                pushed.insert(format!("s{round}/deep/er/b.txt"), format!("b{round}"));
                write_tree(&src, &pushed);
                let r = ok(home, &["workspace", "sync", "push", &id, &src.display().to_string(), "--json"]);
                assert_eq!(r["workspace_sync"]["entry_count"], 5, "{r}");
                expected.extend(pushed);
            }
            _ => {
                let path = format!("x{round}.txt");
                let cmd = format!("echo x{round} > {path}");
                let r = ok(home, &["workspace", "exec", &id, "--sync", "--json", "--", "sh", "-c", &cmd]);
                assert_eq!(r["exit_code"], 0, "{r}");
                expected.insert(path, format!("x{round}"));
            }
        }
        crash_and_check(home, &id, &expected, kind, round);
        timings.push((kind.to_string(), t.elapsed()));
    }
    finish(home, &id);
    timings
}

/// `reset --snapshot s1` and plain resets, alternating so every reset changes the tree, each
/// followed by a SIGKILL of QEMU.
fn resets_survive(home: &TestHome, seed: &Path) -> Vec<(String, Duration)> {
    let id = create(home, seed);
    let baseline = seed_tree();
    let mut snap = baseline.clone();
    ok(home, &["workspace", "file", "write", &id, "snap/only.txt", "--text", "in s1", "--json"]);
    ok(home, &["workspace", "file", "write", &id, "p.txt", "--text", "p in s1", "--json"]);
    snap.insert("snap/only.txt".into(), "in s1".into());
    snap.insert("p.txt".into(), "p in s1".into());
    ok(home, &["workspace", "snapshot", "create", &id, "s1", "--json"]);
    let mut timings = Vec::new();
    for round in 0..2 * ROUNDS_PER_KIND {
        if FAILED.load(Ordering::SeqCst) {
            break;
        }
        let t = Instant::now();
        let (kind, args, expected) = if round % 2 == 0 {
            ("reset --snapshot", vec!["workspace", "reset", &id, "--snapshot", "s1", "--json"], &snap)
        } else {
            ("reset", vec!["workspace", "reset", &id, "--json"], &baseline)
        };
        let r = ok(home, &args);
        assert_eq!(r["reset_count"], round + 1, "{r}");
        let started = crash_and_check(home, &id, expected, kind, round);
        assert_eq!(started["reset_count"], round + 1, "the reset's record update was lost: {started}");
        assert_eq!(started["command_count"], 0, "history must be empty after a reset: {started}");
        timings.push((kind.to_string(), t.elapsed()));
    }
    finish(home, &id);
    timings
}

/// Clean stop, then the image must be clean as it is (no journal to replay), then delete.
fn finish(home: &TestHome, id: &str) {
    ok(home, &["workspace", "stop", id, "--json"]);
    assert_fsck_clean(&runtime_dir(home, id).join("rootfs.ext4"), false);
    ok(home, &["workspace", "delete", id, "--json"]);
}

fn report(timings: &[(String, Duration)]) {
    let mut by_kind: BTreeMap<&str, (usize, Duration)> = BTreeMap::new();
    for (k, d) in timings {
        let e = by_kind.entry(k).or_default();
        e.0 += 1;
        e.1 += *d;
    }
    for (k, (n, d)) in by_kind {
        eprintln!("  {k}: {n} rounds, {:.1} s/round (call + kill + start + check)", d.as_secs_f64() / n as f64);
    }
}

/// Runs one side in its own thread; a panic stops the other side at its next round.
/// `PYRO_DURABILITY_ONLY=edits|resets` runs just one side (when debugging it).
fn run_side<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    name: &'static str,
    side: fn(&TestHome, &Path) -> Vec<(String, Duration)>,
    home: &'s TestHome,
    seed: &'s Path,
) -> Option<std::thread::ScopedJoinHandle<'s, Vec<(String, Duration)>>> {
    let only = std::env::var("PYRO_DURABILITY_ONLY").unwrap_or_default();
    if !only.is_empty() && only != name {
        return None;
    }
    Some(scope.spawn(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| side(home, seed))).unwrap_or_else(|p| {
            FAILED.store(true, Ordering::SeqCst);
            std::panic::resume_unwind(p)
        })
    }))
}

#[test]
fn every_acknowledged_change_survives_a_sigkill_of_qemu() {
    let home = TestHome::new();
    let seed = home.path().join("seed");
    write_tree(&seed, &seed_tree());
    let started = Instant::now();
    let results = std::thread::scope(|s| {
        let handles =
            [run_side(s, "edits", edits_survive, &home, &seed), run_side(s, "resets", resets_survive, &home, &seed)];
        handles.into_iter().flatten().map(|h| h.join()).collect::<Vec<_>>()
    });
    let mut rounds = 0;
    for r in results {
        match r {
            Ok(timings) => {
                rounds += timings.len();
                report(&timings);
            }
            Err(p) => std::panic::resume_unwind(p),
        }
    }
    eprintln!("durability: {rounds} rounds in {:.0} s", started.elapsed().as_secs_f64());
}

/// A reset whose `pyro` process is SIGKILLed at each of its steps (test hook
/// `PYRO_TEST_KILL_AT`): the next call settles it, and the workspace starts either exactly as
/// before the reset (killed before the new disk was complete) or fully reset (after).
#[test]
fn a_reset_killed_at_any_step_leaves_a_workspace_that_starts() {
    use std::os::unix::process::ExitStatusExt;
    const STEPS: [(&str, bool); 7] = [
        ("reset:intent", false),
        ("reset:disk", false),
        ("reset:boot", false),
        ("reset:restore", false),
        ("reset:ready", true),
        ("reset:swap", true),
        ("reset:record", true),
    ];
    let home = TestHome::new();
    let seed = home.path().join("seed");
    write_tree(&seed, &seed_tree());
    let id = create(&home, &seed);
    let mut current = seed_tree();
    let mut resets = 0;
    for (i, (step, completes)) in STEPS.into_iter().enumerate() {
        ok_vm(&home, &id, &["workspace", "file", "write", &id, "marker.txt", "--text", &format!("m{i}"), "--json"]);
        current.insert("marker.txt".into(), format!("m{i}"));
        assert_eq!(guest_tree(&home, &id), current);
        let before = ok(&home, &["workspace", "status", &id, "--json"]);
        assert!(before["command_count"].as_u64().unwrap() > 0);

        let o = home.cmd().args(["workspace", "reset", &id, "--json"]).env("PYRO_TEST_KILL_AT", step).output().unwrap();
        assert_eq!(o.status.signal(), Some(libc::SIGKILL), "reset should die at {step}: {}{}", stdout(&o), stderr(&o));

        // The first call after the crash settles it: stopped, finished or rolled back.
        let settled = ok_vm(&home, &id, &["workspace", "status", &id, "--json"]);
        assert_eq!(settled["state"], "stopped", "after a reset killed at {step}: {settled}");
        let rt = runtime_dir(&home, &id);
        for leftover in ["rootfs.reset.ext4", "rootfs.reset.ext4.partial"] {
            assert!(!rt.join(leftover).exists(), "{leftover} left behind after {step}");
        }
        assert!(!home.path().join("workspaces").join(&id).join("reset.json").exists());
        assert_fsck_clean(&rt.join("rootfs.ext4"), true);

        let started = ok_vm(&home, &id, &["workspace", "start", &id, "--json"]);
        if completes {
            resets += 1;
            current = seed_tree();
            assert_eq!(started["command_count"], 0, "{step}: {started}");
        } else {
            assert_eq!(started["command_count"], before["command_count"], "{step}: {started}");
        }
        assert_eq!(started["reset_count"], resets, "{step}: {started}");
        assert_eq!(guest_tree(&home, &id), current, "a reset killed at {step} must leave all or nothing");
    }
    finish(&home, &id);
}

/// A reset whose restore fails (a snapshot archive with a member pyro refuses, after a valid
/// one) leaves the workspace exactly as it was: same disk, history and counters.
#[test]
fn a_failed_reset_changes_nothing() {
    let home = TestHome::new();
    let seed = home.path().join("seed");
    write_tree(&seed, &seed_tree());
    let id = create(&home, &seed);
    ok_vm(&home, &id, &["workspace", "file", "write", &id, "marker.txt", "--text", "kept", "--json"]);
    let mut expected = seed_tree();
    expected.insert("marker.txt".into(), "kept".into());
    ok_vm(&home, &id, &["workspace", "snapshot", "create", &id, "s1", "--json"]);
    assert_eq!(guest_tree(&home, &id), expected);
    // Replace the snapshot's archive: a valid file, then a fifo (refused by the guest).
    let bad = home.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("a.txt"), "a\n").unwrap();
    assert!(Command::new("mkfifo").arg(bad.join("fifo")).status().unwrap().success());
    let tar = home.path().join("workspaces").join(&id).join("snapshots").join("s1.tar");
    let o = Command::new("tar").arg("cf").arg(&tar).arg("-C").arg(&bad).args(["a.txt", "fifo"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let e = common::fail(&home, &["workspace", "reset", &id, "--snapshot", "s1"]);
    assert!(e.contains("unsupported type"), "{e}");
    let st = ok_vm(&home, &id, &["workspace", "status", &id, "--json"]);
    assert_eq!(st["state"], "stopped", "{st}");
    assert_eq!(st["reset_count"], 0, "{st}");
    assert_eq!(st["command_count"], 1, "{st}");
    assert!(st["last_error"].as_str().unwrap().contains("/workspace is as it was"), "{st}");
    assert!(!runtime_dir(&home, &id).join("rootfs.reset.ext4").exists());
    ok_vm(&home, &id, &["workspace", "start", &id, "--json"]);
    assert_eq!(guest_tree(&home, &id), expected, "a failed reset must not touch /workspace");
    finish(&home, &id);
}
