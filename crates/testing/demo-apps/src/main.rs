//! `osm-demo-app` binary: parses the command line and runs the app on a single-threaded runtime (these
//! apps are tiny; one thread keeps many of them cheap on a 2-core machine).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;
use osm_demo_apps::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("osm-demo-app: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("osm-demo-app: {err}");
            ExitCode::FAILURE
        }
    }
}
