//! `osm completion <shell>` prints a script that knows the upstream verbs.

#[test]
fn bash_completion_knows_the_verbs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_osm"))
        .args(["completion", "bash"])
        .output()
        .expect("osm runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let script = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(script.contains("complete -F"), "not a bash completion script");
    for verb in ["install", "namespace", "check-pods", "bug-report", "upgrade"] {
        assert!(script.contains(verb), "completion lacks {verb}");
    }
}
