//! The guest's serial console cannot fill the host disk: console.log is rotated at 1 MiB and
//! the host keeps two generations, however much the guest writes.

mod common;

use common::{ok, stderr, stdout, TestHome};
use std::path::Path;
use std::time::{Duration, Instant};

const GENERATION: u64 = 1 << 20;

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn a_flooded_serial_console_stays_under_two_mebibytes_and_the_vm_keeps_working() {
    let home = TestHome::new();
    let w = ok(&home, &["workspace", "create", "debian:12", "--json"]);
    let id = w["workspace_id"].as_str().unwrap().to_string();
    let runtime = home.path().join("workspaces").join(&id).join("runtime");
    let (current, previous) = (runtime.join("console.log"), runtime.join("console.log.1"));

    // 2.5 MB of console output (more with the tty's \r\n), past both generations. TCG's
    // emulated UART moves a few hundred KB/s, so this stays a few seconds.
    let flood = 2_500_000;
    let o = home.run(&[
        "workspace",
        "exec",
        &id,
        "--timeout-seconds",
        "120",
        "--",
        "bash",
        "-c",
        &format!("yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c {flood} > /dev/ttyS0"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The guest still answers, and its newest console line reaches the log.
    let o =
        home.run(&["workspace", "exec", &id, "--", "bash", "-c", "echo console-marker-7f3a > /dev/ttyS0; echo alive"]);
    assert_eq!(stdout(&o), "alive\n", "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&current).unwrap_or_default().contains("console-marker-7f3a") {
        assert!(Instant::now() < deadline, "the console marker never reached console.log");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (a, b) = (size(&current), size(&previous));
    assert!(a <= GENERATION, "console.log is {a} bytes");
    assert_eq!(b, GENERATION, "console.log.1 should be a full generation (rotation happened)");
    assert!(a + b < flood, "the host kept {} of {flood} bytes", a + b);
    // Nothing else in the VM directory grew with the flood.
    for e in std::fs::read_dir(&runtime).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("console") {
            assert!(name == "console.log" || name == "console.log.1", "unexpected {name}");
        }
    }
    ok(&home, &["workspace", "delete", &id, "--json"]);
}
