//! Install an environment with the engine alone (no CLI): `cargo run -p pyro --example pull_env -- debian:12`.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "debian:12".into());
    let paths = pyro::Paths::from_env().expect("paths");
    let store = pyro::env::EnvStore { cache_dir: paths.cache_dir };
    let progress = pyro::Progress::new(|e| eprintln!("[pull] {}: {}", e.stage, e.message));
    match store.pull(&name, &progress) {
        Ok(env) => println!("{}", env.install_dir.display()),
        Err(e) => {
            eprintln!("[error] {e}");
            std::process::exit(1);
        }
    }
}
