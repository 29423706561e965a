//! Writes the Helm chart `charts/osm` from the Rust rendering (`osm_install::chart::files`).
//! Run after changing the rendering or the values: `cargo run -p osm-install --example write-chart`.

#![forbid(unsafe_code)]

use std::path::Path;

fn main() -> std::io::Result<()> {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../charts/osm");
    let templates = chart.join("templates");
    // Stale templates (objects no longer rendered) go away.
    if templates.exists() {
        std::fs::remove_dir_all(&templates)?;
    }
    std::fs::create_dir_all(&templates)?;
    let files = osm_install::chart::files();
    for (path, contents) in &files {
        std::fs::write(chart.join(path), contents)?;
    }
    println!("wrote {} files to {}", files.len(), chart.display());
    Ok(())
}
