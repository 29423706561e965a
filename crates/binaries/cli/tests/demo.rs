//! `osm demo` as a user runs it: live edits of its config directory while traffic flows, an invalid
//! file reported without losing the policy in force, and a Ctrl-C that leaves nothing behind.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const STATUS: &str = "/run/osm-demo/status.json";
const CONFIG: &str = "/run/osm-demo/config";

fn osm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_osm"))
}

/// The status file, if the demo `child` wrote it (not a file left behind by an earlier run).
fn status(child: &Child) -> Option<Value> {
    let s: Value = serde_json::from_str(&std::fs::read_to_string(STATUS).ok()?).ok()?;
    (s["pid"].as_u64() == Some(u64::from(child.id()))).then_some(s)
}

fn counter(s: &Value, app: &str, field: &str) -> u64 {
    s["apps"][app][field].as_u64().unwrap_or(0)
}

/// Polls the status file until `pred` holds; returns it and when it first held.
fn wait_status(
    what: &str,
    timeout: Duration,
    child: &mut Child,
    pred: impl Fn(&Value) -> bool,
) -> (Value, Instant) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = status(child).filter(|s| pred(s)) {
            return (s, Instant::now());
        }
        if let Ok(Some(code)) = child.try_wait() {
            panic!("osm demo exited ({code}) while waiting for: {what}");
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}; status: {:?}",
            status(child)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_live_edits_and_clean_shutdown() {
    if osm_harness::require_or_skip("demo_live_edits_and_clean_shutdown").is_none() {
        return;
    }
    let log = std::env::temp_dir().join(format!("osm-demo-test-{}.log", std::process::id()));
    let mut demo = KillOnDrop(
        osm()
            .args(["demo", "run", "--mode", "permissive"])
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let child = &mut demo.0;

    // Permissive: bookthief is served.
    let (before, _) = wait_status(
        "bookthief served in permissive mode",
        Duration::from_secs(120),
        child,
        |s| counter(s, "bookthief", "ok") > 3,
    );
    let netns: Vec<String> = before["netns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let pids: Vec<u64> = before["pids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(netns.len(), 5, "{before}");

    // Switch to SMI by editing the config directory (what `osm demo mode smi` does).
    let out = osm().args(["demo", "mode", "smi"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let switched = Instant::now();
    let switched_ms = unix_ms();
    // The status file lags the apps by up to ~0.7 s (apps write every 200 ms, the demo every 500 ms), so
    // the baseline is bookthief's counters as written after the switch, not whatever the file held then.
    let (at_switch, _) = wait_status(
        "bookthief's counters written after the switch",
        Duration::from_secs(5),
        child,
        |s| s["apps"]["bookthief"]["updated_unix_ms"].as_u64() >= Some(switched_ms),
    );
    let thief_refused_at_switch = counter(&at_switch, "bookthief", "refused");
    // bookthief is refused within 2 s ...
    let (refusing, refused_at) = wait_status(
        "bookthief refused after switching to SMI",
        Duration::from_secs(10),
        child,
        |s| counter(s, "bookthief", "refused") > thief_refused_at_switch + 1,
    );
    assert!(
        refused_at - switched <= Duration::from_secs(2),
        "bookthief refused only after {:?}",
        refused_at - switched
    );
    // ... and from then on it is not served: its ok counter stops while refusals go on.
    let thief_ok_refusing = counter(&refusing, "bookthief", "ok");
    let thief_refused_refusing = counter(&refusing, "bookthief", "refused");
    let (settled, _) = wait_status("a second of SMI traffic", Duration::from_secs(10), child, |s| {
        counter(s, "bookthief", "refused") > thief_refused_refusing + 5
    });
    assert!(
        counter(&settled, "bookthief", "ok") <= thief_ok_refusing + 1,
        "bookthief still served in SMI mode: {settled}"
    );

    // An invalid file is reported with file and field, and the SMI policy stays in force.
    std::fs::write(
        Path::new(CONFIG).join("broken.yaml"),
        "apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\nmetadata:\n  name: broken\n  namespace: bookstore\nspec:\n  service: bookstore\n  backends:\n  - service: bookstore-v1\n    weight: -5\n",
    )
    .unwrap();
    let (rejected, _) = wait_status("the invalid file reported", Duration::from_secs(5), child, |s| {
        s["last_event"].as_str().is_some_and(|e| e.contains("REJECTED"))
    });
    let event = rejected["last_event"].as_str().unwrap();
    assert!(
        event.contains("broken.yaml") && event.contains("weight"),
        "error must name file and field: {event}"
    );
    let buyer_ok = counter(&rejected, "bookbuyer", "ok");
    let thief_ok = counter(&rejected, "bookthief", "ok");
    let thief_refused = counter(&rejected, "bookthief", "refused");
    let (after, _) = wait_status(
        "traffic after the invalid file",
        Duration::from_secs(10),
        child,
        |s| {
            counter(s, "bookbuyer", "ok") > buyer_ok + 5
                && counter(s, "bookthief", "refused") > thief_refused + 5
        },
    );
    assert!(
        counter(&after, "bookthief", "ok") <= thief_ok + 1,
        "policy lost after an invalid file: {after}"
    );

    // Ctrl-C: everything the demo created is gone.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "osm demo did not stop within 30 s of Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        code.success(),
        "osm demo exited with {code}; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let listed = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for ns in &netns {
        assert!(
            !listed.contains(ns.as_str()),
            "network namespace {ns} left behind"
        );
        assert!(
            !Path::new("/etc/netns").join(ns).exists(),
            "/etc/netns/{ns} left behind"
        );
    }
    for p in pids {
        assert!(
            !Path::new(&format!("/proc/{p}")).exists(),
            "process {p} left behind"
        );
    }
    assert!(!Path::new("/run/osm-demo").exists(), "/run/osm-demo left behind");
    // The host's own network namespace was never touched: no OSM chains, no demo veths.
    let nat = String::from_utf8(
        Command::new("iptables-save")
            .args(["-t", "nat"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !nat.contains("OSM_PROXY"),
        "OSM iptables rules in the host namespace"
    );
    let links = String::from_utf8(Command::new("ip").args(["-o", "link"]).output().unwrap().stdout).unwrap();
    assert!(
        !links.contains("osmdemo"),
        "demo veth in the host namespace: {links}"
    );
    let _ = std::fs::remove_file(&log);
}
