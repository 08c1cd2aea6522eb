//! Build (or find) environments in the cache and print what it took:
//! `cargo run -p pyro --example build_env -- [--cache DIR] [NAME...]` (default: all three,
//! cache `$PYRO_CACHE_DIR` or `~/.cache/pyro`). Needs root for a build.

use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut cache = None;
    if let Some(i) = args.iter().position(|a| a == "--cache") {
        if i + 1 >= args.len() {
            eprintln!("--cache needs a directory");
            std::process::exit(2);
        }
        cache = Some(PathBuf::from(args.remove(i + 1)));
        args.remove(i);
    }
    let cache_dir = cache.unwrap_or_else(|| pyro::Paths::from_env().expect("paths").cache_dir);
    let names: Vec<String> =
        if args.is_empty() { pyro::env::catalog().iter().map(|s| s.name.to_string()).collect() } else { args };
    let store = pyro::env::EnvStore { cache_dir };
    let mut failed = false;
    for name in names {
        let t0 = Instant::now();
        let progress = pyro::Progress::new(move |ev| {
            let pct = ev.fraction.map(|f| format!("{:3.0}%", f * 100.0)).unwrap_or_else(|| "    ".into());
            eprintln!("[{:6.1}s] {pct} {:<12} {}", t0.elapsed().as_secs_f64(), ev.stage, ev.message);
        });
        match store.pull(&name, &progress) {
            Ok(env) => {
                println!("{name}: ready in {:.1} s at {}", t0.elapsed().as_secs_f64(), env.install_dir.display());
                println!("  kernel {} ({})", env.kernel_release, sizes(&env.kernel_image));
                println!("  rootfs {}", sizes(&env.rootfs_image));
                let order = std::fs::read_to_string(env.modules_dir.join("order")).unwrap_or_default();
                println!("  modules: {}", order.split_whitespace().collect::<Vec<_>>().join(" "));
                println!("  source {} digest {}", env.source, env.source_digest);
            }
            Err(e) => {
                failed = true;
                eprintln!("{name}: failed after {:.1} s [{}]: {e}", t0.elapsed().as_secs_f64(), e.code());
            }
        }
    }
    std::process::exit(i32::from(failed));
}

/// "<apparent> MiB apparent, <allocated> MiB allocated".
fn sizes(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(p) {
        Ok(m) => format!("{} MiB apparent, {} MiB allocated", m.len() >> 20, (m.blocks() * 512) >> 20),
        Err(e) => format!("unreadable: {e}"),
    }
}
