//! Runs the real `osm-init` binary in a fresh network namespace, twice, and checks that `iptables-save`
//! shows every rule exactly once. Needs root, `ip` and `iptables-restore`: without them the test is
//! skipped with a loud message, except under `CI=true`, where that is a failure.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Write as _;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace deleted on drop, also when the test panics.
struct Netns(String);

impl Netns {
    fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "osminit-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        Netns(name)
    }

    fn exec(&self, argv: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(argv)
            .output()
            .expect("run ip netns exec")
    }

    fn nat(&self) -> String {
        let out = self.exec(&["iptables-save", "-t", "nat"]);
        assert!(
            out.status.success(),
            "iptables-save: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(argv: &[&str]) {
    let status = Command::new(argv[0])
        .args(&argv[1..])
        .status()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(status.success(), "{argv:?}: {status}");
}

/// Whether the prerequisites are here; `false` (after a loud message) means skip.
fn prerequisites(test: &str) -> bool {
    let missing = if !nix::unistd::geteuid().is_root() {
        Some("not running as root".to_owned())
    } else {
        ["ip", "iptables-save", "iptables-restore"]
            .into_iter()
            .find(|tool| Command::new(tool).arg("--version").output().is_err())
            .map(|tool| format!("`{tool}` not found"))
    };
    match missing {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: {why} (CI=true: not skipping)")
        }
        Some(why) => {
            // Straight to the stderr handle: libtest captures eprintln! of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!! SKIPPED {test}: {why} — run as root with iproute2 and iptables installed !!!!!\n"
            );
            false
        }
    }
}

/// The `-A` lines of a dump with how often each occurs.
fn rule_counts(dump: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in dump.lines().filter(|l| l.starts_with("-A ")) {
        *counts.entry(line.to_owned()).or_default() += 1;
    }
    counts
}

fn osm_init(ns: &Netns, args: &[&str]) {
    let bin = env!("CARGO_BIN_EXE_osm-init");
    let out = ns.exec(&[&[bin][..], args].concat());
    assert!(
        out.status.success(),
        "osm-init {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Running the init twice leaves exactly one copy of each rule, including the two jumps.
#[test]
fn running_twice_leaves_one_copy_of_each_rule() {
    if !prerequisites("running_twice_leaves_one_copy_of_each_rule") {
        return;
    }
    let ns = Netns::create();
    let args = [
        "--outbound-port-exclusion-list",
        "6379",
        "--outbound-ip-range-exclusion-list",
        "169.254.169.254/32",
    ];
    osm_init(&ns, &args);
    let first = ns.nat();
    osm_init(&ns, &args);
    let second = ns.nat();

    let counts = rule_counts(&second);
    let dupes: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dupes.is_empty(),
        "duplicated rules after the second run: {dupes:?}\n{second}"
    );
    assert_eq!(rule_counts(&first), counts, "the second run changed the rules");
    for expected in [
        "-A PREROUTING -p tcp -j OSM_PROXY_INBOUND",
        "-A OUTPUT -p tcp -j OSM_PROXY_OUTBOUND",
        "-A OSM_PROXY_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15003",
        "-A OSM_PROXY_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A OSM_PROXY_OUTBOUND -d 169.254.169.254/32 -j RETURN",
        "-A OSM_PROXY_OUTBOUND -j OSM_PROXY_OUT_REDIRECT",
    ] {
        assert_eq!(
            counts.get(expected),
            Some(&1),
            "missing {expected:?} in\n{second}"
        );
    }
    // Inbound: 5 skips + catch-all; 2 redirects; outbound: 4 fixed + CIDR + ports + catch-all; 2 jumps.
    assert_eq!(counts.len(), 17, "{second}");
}

/// A re-run with a different config replaces the chain bodies instead of adding to them.
#[test]
fn rerun_with_new_config_replaces_rules() {
    if !prerequisites("rerun_with_new_config_replaces_rules") {
        return;
    }
    let ns = Netns::create();
    osm_init(&ns, &["--inbound-port-exclusion-list", "8080"]);
    osm_init(&ns, &["--outbound-ip-range-inclusion-list", "10.96.0.0/12"]);
    let dump = ns.nat();
    assert!(!dump.contains("8080"), "old exclusion survived:\n{dump}");
    assert!(
        dump.contains("-A OSM_PROXY_OUTBOUND -d 10.96.0.0/12 -j OSM_PROXY_OUT_REDIRECT"),
        "{dump}"
    );
    assert!(dump.contains("-A OSM_PROXY_OUTBOUND -j RETURN"), "{dump}");
    assert!(
        !dump.contains("-A OSM_PROXY_OUTBOUND -j OSM_PROXY_OUT_REDIRECT"),
        "{dump}"
    );
    assert!(rule_counts(&dump).values().all(|n| *n == 1), "{dump}");
}

/// A bad flag value exits non-zero, names the flag, and leaves the namespace untouched.
#[test]
fn invalid_flag_changes_nothing() {
    if !prerequisites("invalid_flag_changes_nothing") {
        return;
    }
    let ns = Netns::create();
    let bin = env!("CARGO_BIN_EXE_osm-init");
    let out = ns.exec(&[bin, "--outbound-ip-range-exclusion-list", "10.0.0.0/8,nope"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--outbound-ip-range-exclusion-list") && stderr.contains("nope"),
        "{stderr}"
    );
    assert!(!ns.nat().contains("OSM_PROXY"));
}
