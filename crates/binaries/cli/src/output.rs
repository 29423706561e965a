//! `-o table|json|yaml` for commands that read state.

use anyhow::Result;
use serde::Serialize;

/// How a read command prints what it found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table for people (the default).
    #[default]
    Table,
    /// JSON, for scripts.
    Json,
    /// YAML, for scripts and `kubectl`-style reading.
    Yaml,
}

/// Prints `value` as JSON or YAML; returns `false` for [`OutputFormat::Table`], which the caller
/// renders itself.
pub fn print_structured<T: Serialize>(format: OutputFormat, value: &T) -> Result<bool> {
    match format {
        OutputFormat::Table => Ok(false),
        OutputFormat::Json => {
            println!("{}", serde_json::to_string_pretty(value)?);
            Ok(true)
        }
        OutputFormat::Yaml => {
            print!("{}", serde_saphyr::to_string(value)?);
            Ok(true)
        }
    }
}
