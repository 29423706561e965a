//! `osm verify` (placeholder: filled in by the cluster-verbs work).

#[derive(clap::Subcommand, Debug)]
pub enum VerifyCommand {}

pub fn run(_global: &crate::Global, command: VerifyCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {}
}
