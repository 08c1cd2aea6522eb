//! Shared helpers for guest-backed CLI tests. Every test gets its own `PYRO_HOME`, shares the
//! environment cache (`PYRO_CACHE_DIR`, built once by scripts/test.sh), and checks afterwards
//! that nothing it started is still running.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn pyro_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pyro"))
}

/// A private state dir; on drop, asserts no VM process of it survives and removes it.
pub struct TestHome {
    pub dir: tempfile::TempDir,
}

impl TestHome {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("pyro-t-").tempdir_in("/tmp").expect("tempdir");
        TestHome { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(pyro_bin());
        c.env("PYRO_HOME", self.path());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("pyro runs")
    }

    /// Processes whose command line mentions this home (supervisors, QEMU).
    pub fn leftover_processes(&self) -> Vec<String> {
        processes_mentioning(&self.path().display().to_string())
    }

    /// Assert the home holds no VM process, socket or VM directory.
    pub fn assert_clean(&self) {
        // A supervisor may take a moment to finish its own cleanup after the CLI returns.
        for _ in 0..100 {
            if self.leftover_processes().is_empty() && vm_dirs(self.path()).is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(self.leftover_processes(), Vec::<String>::new(), "processes left behind");
        assert_eq!(vm_dirs(self.path()), Vec::<PathBuf>::new(), "VM directories left behind");
        let sockets = find_sockets(self.path());
        assert!(sockets.is_empty(), "sockets left behind: {sockets:?}");
    }
}

fn vm_dirs(home: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(home.join("vms"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn find_sockets(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_socket() {
                out.push(e.path());
            }
        }
    }
    out
}

pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            // Zombies have an empty cmdline, so anything here is a live process.
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

impl Drop for TestHome {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_clean();
        } else {
            // Don't leak VMs from a failed test either.
            for p in self.leftover_processes() {
                if let Some(pid) = p.split(':').next().and_then(|s| s.parse::<i32>().ok()) {
                    // SAFETY: kill(2) takes plain integers and touches no memory of ours; the pid is a
                    // leftover VM process of this test home.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}\nstderr: {}", stdout(o), stderr(o)))
}

/// Run and expect success; the JSON payload.
pub fn ok(home: &TestHome, args: &[&str]) -> serde_json::Value {
    let o = home.run(args);
    assert!(o.status.success(), "{args:?} failed: stdout={} stderr={}", stdout(&o), stderr(&o));
    json(&o)
}

/// Run and expect a clean failure (exit 1, no panic); the stderr text.
pub fn fail(home: &TestHome, args: &[&str]) -> String {
    let o = home.run(args);
    assert_eq!(o.status.code(), Some(1), "{args:?} should fail: stdout={} stderr={}", stdout(&o), stderr(&o));
    let e = stderr(&o);
    assert!(!e.contains("panicked"), "{e}");
    e
}

/// Byte-wise scan of a (possibly huge, sparse) file in chunks, overlapping by the needle.
pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return false;
        }
        carry.extend_from_slice(&buf[..n]);
        if memchr::memmem::find(&carry, needle).is_some() {
            return true;
        }
        let keep = carry.len().saturating_sub(needle.len() - 1);
        carry.drain(..keep);
    }
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}

/// `GET path` over HTTP/1.0 to 127.0.0.1:port; the whole answer, head included.
pub fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), std::time::Duration::from_secs(5))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// Start service `web` in workspace `id`: `python3 -m http.server 8000` serving the
/// workspace's `site/` directory, ready when it answers HTTP, published on host port `port`
/// (the workspace needs `egress+published-ports` and python3, e.g. debian:12-build).
pub fn start_site_service(home: &TestHome, id: &str, port: u16) -> serde_json::Value {
    let publish = format!("{port}:8000");
    let args = ["workspace", "service", "start", id, "web", "--cwd", "site", "--ready-http", "http://127.0.0.1:8000/"];
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--publish", &publish, "--json", "--", "python3", "-m", "http.server", "8000"]);
    ok(home, &all)
}
