//! `osm install`, `osm uninstall mesh`, `osm mesh list|upgrade` (placeholder: filled in by the install work).

use std::process::ExitCode;

use anyhow::Result;

use crate::Global;

#[derive(clap::Args, Debug)]
pub struct InstallArgs {}

#[derive(clap::Subcommand, Debug)]
pub enum UninstallCommand {}

#[derive(clap::Subcommand, Debug)]
pub enum MeshCommand {}

pub fn install(_global: &Global, _args: InstallArgs) -> Result<ExitCode> {
    anyhow::bail!("osm install: not implemented yet")
}

pub fn uninstall(_global: &Global, command: UninstallCommand) -> Result<ExitCode> {
    match command {}
}

pub fn mesh(_global: &Global, command: MeshCommand) -> Result<ExitCode> {
    match command {}
}
