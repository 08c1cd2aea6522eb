//! The tidy check on this repository (see `crates/tidy/src/lib.rs`): prints every rule with
//! its outcome, what was skipped for a crate that does not exist yet and what the allow-list
//! excused, then fails on any violation. `TIDY_STRICT=1` also fails on skipped rules and on
//! allow-list entries that excuse nothing.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let strict = std::env::var("TIDY_STRICT").is_ok_and(|v| v == "1");
    let report = match tidy::check(&root) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("tidy: cannot read the repository: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.render(strict));
    if report.passed(strict) {
        println!("tidy: passed{}", if strict { " (strict)" } else { "" });
        ExitCode::SUCCESS
    } else {
        println!("tidy: FAILED");
        ExitCode::FAILURE
    }
}
