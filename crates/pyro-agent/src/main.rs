//! `pyro-agent`: pyro's guest init and agent in one static binary.
//!
//! - `/init` in the initramfs (PID 1, no arguments): stage 1, see [`init::stage1`].
//! - `pyro-agent pid1`: stage 2, PID 1 in the real root, see [`init::pid1`].
//! - `pyro-agent serve`: the agent service on the virtio-serial port.
//! - `pyro-agent serve --socket PATH`: the agent service on a Unix socket (host-side tests).
//! - `pyro-agent service-run DIR NAME CWD COMMAND`: the runner of one background service.
//! - `pyro-agent command-run DIR ID CWD TIMEOUT_MS COMMAND`: the runner of one background command.

mod command;
mod exec;
mod fs;
#[cfg(feature = "hostile")]
mod hostile;
mod init;
mod serve;
mod service;
mod shell;
mod sys;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if std::process::id() == 1 && args.len() == 1 && args[0].ends_with("init") {
        init::stage1();
    }
    let code = match args.iter().skip(1).map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["pid1"] => init::pid1(),
        ["serve"] => serve::serve_device(),
        ["serve", "--socket", path] => serve::serve_socket(path),
        ["service-run", dir, name, cwd, command] => service::run_service(dir, name, cwd, command),
        ["command-run", dir, id, cwd, timeout_ms, command] => command::run_command(dir, id, cwd, timeout_ms, command),
        ["--version"] => {
            println!("pyro-agent {} (protocol {})", env!("CARGO_PKG_VERSION"), pyro_protocol::PROTOCOL_VERSION);
            0
        }
        _ => {
            eprintln!("usage: pyro-agent [pid1 | serve [--socket PATH] | --version] (runs inside pyro guests)");
            2
        }
    };
    std::process::exit(code);
}
