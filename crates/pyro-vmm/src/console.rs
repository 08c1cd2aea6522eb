//! The guest's serial console on the host, bounded.
//!
//! The guest writes its serial port as fast as it likes (`cat /dev/urandom > /dev/ttyS0`);
//! written straight to a file by QEMU that fills the host disk. Instead QEMU writes into a
//! pipe (passed as an fd set, no path to open), and a supervisor thread drains it into
//! `console.log`, rotated to `console.log.1` when it reaches [`GENERATION_BYTES`]: at most
//! two generations, 2 MiB, on disk per VM, however long the VM runs.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Size of one console log generation; the host keeps the current one and the previous.
pub const GENERATION_BYTES: u64 = 1 << 20;
/// The previous generation, next to `console.log`.
pub const PREVIOUS_SUFFIX: &str = ".1";
/// QEMU fd set number the console pipe is passed in (`-add-fd ...,set=N`).
pub const FDSET: u32 = 7;

/// Console log writer that never holds more than two generations of `cap` bytes.
pub struct BoundedLog {
    path: PathBuf,
    previous: PathBuf,
    file: File,
    written: u64,
    cap: u64,
}

fn create_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}

impl BoundedLog {
    /// Start a fresh log at `path` (the previous boot's log and its old generation go).
    pub fn create(path: &Path, cap: u64) -> io::Result<BoundedLog> {
        let mut previous = path.as_os_str().to_owned();
        previous.push(PREVIOUS_SUFFIX);
        let previous = PathBuf::from(previous);
        let _ = std::fs::remove_file(&previous);
        let file = create_private(path)?;
        Ok(BoundedLog { path: path.to_path_buf(), previous, file, written: 0, cap: cap.max(1) })
    }

    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.written >= self.cap {
                self.rotate()?;
            }
            let room = (self.cap - self.written) as usize;
            let n = room.min(data.len());
            self.file.write_all(&data[..n])?;
            self.written += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        std::fs::rename(&self.path, &self.previous)?;
        self.file = create_private(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// The console pipe: QEMU gets the write end, the supervisor drains the read end.
pub struct ConsolePipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
}

impl ConsolePipe {
    pub fn new() -> io::Result<ConsolePipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned here.
        Ok(unsafe { ConsolePipe { read: OwnedFd::from_raw_fd(fds[0]), write: OwnedFd::from_raw_fd(fds[1]) } })
    }

    /// QEMU arguments that hand it the write end (inherited under its own number).
    pub fn qemu_args(&self) -> Vec<String> {
        vec!["-add-fd".into(), format!("fd={},set={FDSET}", self.write.as_raw_fd())]
    }

    /// The write end's number, to clear close-on-exec on in the child.
    pub fn child_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }
}

/// In the forked child: let the console write end survive exec.
///
/// # Safety
/// Only between fork and exec; fcntl is async-signal-safe.
pub unsafe fn keep_across_exec(fd: RawFd) -> io::Result<()> {
    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drain `read` into a bounded log at `path` until every writer is gone (QEMU exited). The
/// pipe is drained even when the log cannot be written (full disk, directory gone): a pipe
/// nobody reads would stall the guest's serial port.
pub fn drain(read: OwnedFd, path: &Path, cap: u64) -> io::Result<()> {
    let mut log = BoundedLog::create(path, cap);
    let opened = log.as_ref().map(|_| ()).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())));
    let mut pipe = File::from(read);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => return opened,
            Ok(n) => {
                if let Ok(log) = &mut log {
                    let _ = log.write(&buf[..n]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Last `n` non-empty console lines, across the rotation boundary if the current generation
/// has fewer.
pub fn tail(path: &Path, n: usize) -> String {
    let current = crate::util::tail_lines(path, n);
    let have = current.lines().count();
    if have >= n {
        return current;
    }
    let mut previous = path.as_os_str().to_owned();
    previous.push(PREVIOUS_SUFFIX);
    let older = crate::util::tail_lines(Path::new(&previous), n - have);
    match (older.is_empty(), current.is_empty()) {
        (true, _) => current,
        (false, true) => older,
        (false, false) => format!("{older}\n{current}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(p: &Path) -> u64 {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn the_log_keeps_two_generations_of_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut log = BoundedLog::create(&path, 1000).unwrap();
        for i in 0..500 {
            log.write(format!("line {i:05}\n").as_bytes()).unwrap();
        }
        let previous = dir.path().join("console.log.1");
        assert!(size(&path) <= 1000 && size(&previous) == 1000, "{} {}", size(&path), size(&previous));
        // The newest output is at the end of console.log, the one before it in console.log.1.
        assert!(tail(&path, 1).ends_with("line 00499"));
        assert!(tail(&path, 200).contains("line 00400"));
        // A chunk larger than the cap is split, never written past it.
        log.write(&[b'x'; 5000]).unwrap();
        assert!(size(&path) <= 1000 && size(&previous) <= 1000);
        // A new boot starts fresh.
        drop(log);
        BoundedLog::create(&path, 1000).unwrap();
        assert_eq!(size(&path), 0);
        assert!(!previous.exists());
    }

    #[test]
    fn drain_ends_when_the_writer_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let pipe = ConsolePipe::new().unwrap();
        let ConsolePipe { read, write } = pipe;
        let p = path.clone();
        let t = std::thread::spawn(move || drain(read, &p, 4096));
        let mut w = File::from(write);
        for _ in 0..100 {
            w.write_all(&[b'a'; 1000]).unwrap();
        }
        w.write_all(b"\nlast line\n").unwrap();
        drop(w);
        t.join().unwrap().unwrap();
        assert!(size(&path) <= 4096);
        assert_eq!(tail(&path, 1), "last line");
    }
}
