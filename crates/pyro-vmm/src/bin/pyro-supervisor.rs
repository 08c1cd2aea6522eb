//! `pyro-supervisor --vm-dir DIR`: owns one VM (see `pyro_vmm::supervisor`). Started by
//! the engine, never by hand.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = match args.as_slice() {
        [_, flag, dir] if flag == "--vm-dir" => std::path::PathBuf::from(dir),
        _ => {
            eprintln!("usage: pyro-supervisor --vm-dir DIR (started by pyro, not by hand)");
            std::process::exit(2);
        }
    };
    std::process::exit(pyro_vmm::supervisor::server::supervisor_main(dir));
}
