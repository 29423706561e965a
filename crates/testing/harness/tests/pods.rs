//! Pods on a hub, for real: addressing and routing between namespaces, sockets made inside namespaces,
//! processes as other UIDs, hosts files, the OSM interception rules, real Envoy, and clean teardown.
//! Needs root (and Envoy for the Envoy test): skipped loudly when missing, failed under `CI=true`.
//! Tests running the demo-app binary in pods live in `crates/testing/demo-apps/tests/`, where cargo builds it.
#![forbid(unsafe_code)]

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use osm_harness::{Hub, PodSpec, http_request, in_netns, require_netns_or_skip, require_or_skip};

const PREFIX: &str = "osmh";
const TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts one connection and echoes what it reads once.
fn echo_once(listener: TcpListener) -> std::thread::JoinHandle<SocketAddr> {
    std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().expect("accept");
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).expect("read");
        conn.write_all(&buf[..n]).expect("write");
        peer
    })
}

/// Connects to `addr`, sends `ping`, returns the echo.
fn ping(addr: SocketAddr) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.write_all(b"ping")?;
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn netns_names() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn root_links() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().to_owned())
        .collect();
    names.sort();
    names
}

/// Two pods on one hub: pod A reaches a server in pod B by pod IP, and B sees A's address as the
/// peer (no NAT on the bridge).
#[test]
fn pods_reach_each_other_by_ip() {
    if !require_netns_or_skip("pods_reach_each_other_by_ip") {
        return;
    }
    let hub = Hub::create(PREFIX).unwrap();
    let a = hub.add_pod(PodSpec::named("a")).unwrap();
    let b = hub.add_pod(PodSpec::named("b")).unwrap();
    assert_ne!(a.ip(), b.ip());
    let listener = b.bind_tcp(Ipv4Addr::UNSPECIFIED, 7000).unwrap();
    let server = echo_once(listener);
    let target = SocketAddr::from((b.ip(), 7000));
    assert_eq!(a.in_netns(move || ping(target)).unwrap().unwrap(), "ping");
    assert_eq!(server.join().unwrap().ip(), IpAddr::V4(a.ip()));
}

/// A listener bound in the hub (where the control plane's ADS server lives) is reachable from a pod,
/// and served from the test's own process.
#[test]
fn hub_listener_is_reachable_from_pod() {
    if !require_netns_or_skip("hub_listener_is_reachable_from_pod") {
        return;
    }
    let hub = Hub::create(PREFIX).unwrap();
    let pod = hub.add_pod(PodSpec::named("client")).unwrap();
    let listener = hub.bind_tcp(0).unwrap();
    let addr = listener.local_addr().unwrap();
    assert_eq!(addr.ip(), IpAddr::V4(hub.ip()));
    let server = echo_once(listener);
    assert_eq!(pod.in_netns(move || ping(addr)).unwrap().unwrap(), "ping");
    server.join().unwrap();
    // The host namespace has no route to the hub subnet: the listener is not reachable from outside.
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err());
}

/// The hub's bridge MAC (the pods' gateway) as its namespace sees it.
fn bridge_mac(hub: &Hub) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", hub.netns(), "-o", "link", "show", "br0"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = line.split_whitespace();
    words.find(|w| *w == "link/ether");
    words.next().expect("br0 has a MAC").to_owned()
}

/// A pod keeps reaching the hub after more pods join: the gateway's MAC, which the first pod has cached,
/// does not change as ports are added to the bridge (a bridge without a set MAC takes its ports' lowest).
#[test]
fn gateway_stays_reachable_as_pods_join() {
    if !require_netns_or_skip("gateway_stays_reachable_as_pods_join") {
        return;
    }
    let hub = Hub::create(PREFIX).unwrap();
    let first = hub.add_pod(PodSpec::named("first")).unwrap();
    let listener = hub.bind_tcp(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).expect("read");
            conn.write_all(&buf).expect("write");
        }
    });
    assert_eq!(first.in_netns(move || ping(addr)).unwrap().unwrap(), "ping");
    let gateway = bridge_mac(&hub);
    let later: Vec<_> = (0..12)
        .map(|i| hub.add_pod(PodSpec::named(format!("later{i}"))).unwrap())
        .collect();
    assert_eq!(
        bridge_mac(&hub),
        gateway,
        "the gateway MAC changed as pods joined"
    );
    assert_eq!(first.in_netns(move || ping(addr)).unwrap().unwrap(), "ping");
    server.join().unwrap();
    drop(later);
}

/// Dropping the hub and pods removes every namespace and leaves the host's links as they were, also
/// with processes still running in the pods.
#[test]
fn drop_removes_namespaces_and_links() {
    if !require_netns_or_skip("drop_removes_namespaces_and_links") {
        return;
    }
    let links_before = root_links();
    let hub = Hub::create(PREFIX).unwrap();
    let pods: Vec<_> = (0..2)
        .map(|i| hub.add_pod(PodSpec::named(format!("p{i}"))).unwrap())
        .collect();
    let mut ours = vec![hub.netns().to_owned()];
    ours.extend(pods.iter().map(|p| p.netns().to_owned()));
    let sleeper = pods[0].spawn(&["sleep", "600"], &[]).unwrap();
    let pid = sleeper.pid();
    pods[1].set_hosts(&[]).unwrap();
    let etc = std::path::Path::new("/etc/netns").join(pods[1].netns());
    assert!(etc.join("hosts").is_file());
    let listed = netns_names();
    assert!(
        ours.iter().all(|n| listed.contains(n)),
        "{ours:?} not all in {listed:?}"
    );
    // While pods exist, the host namespace has no new links either: veths live in the hub.
    assert_eq!(root_links(), links_before);

    // Drop pods while the process handle is still alive: the pod kills it anyway.
    drop(pods);
    drop(hub);
    let listed = netns_names();
    assert!(
        ours.iter().all(|n| !listed.contains(n)),
        "left behind: {listed:?}"
    );
    assert!(!etc.exists());
    // Killed by the pod's drop (a zombie until its handle reaps it).
    wait_until("sleep is killed", || {
        is_zombie(pid) || !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    drop(sleeper);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(root_links(), links_before);
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
}

/// `spawn_as` runs with the given UID/GID and no supplementary groups; `spawn` runs as root; logs are
/// captured; `set_hosts` feeds the resolver of processes in the pod.
#[test]
fn spawn_uid_logs_and_hosts() {
    if !require_netns_or_skip("spawn_uid_logs_and_hosts") {
        return;
    }
    let hub = Hub::create(PREFIX).unwrap();
    let pod = hub.add_pod(PodSpec::named("p")).unwrap();
    let mut id = pod
        .spawn_as(1500, &["sh", "-c", "id -u; id -g; id -G; echo oops >&2"], &[])
        .unwrap();
    assert!(id.wait_timeout(TIMEOUT).unwrap().success());
    assert_eq!(id.stdout(), "1500\n1500\n1500\n");
    assert_eq!(id.stderr(), "oops\n");

    let mut root = pod
        .spawn(&["sh", "-c", "id -u; echo $GREETING"], &[("GREETING", "hi")])
        .unwrap();
    assert!(root.wait_timeout(TIMEOUT).unwrap().success());
    assert_eq!(root.stdout(), "0\nhi\n");

    let vip: IpAddr = "10.96.0.10".parse().unwrap();
    pod.set_hosts(&[(
        vip,
        vec![
            "bookstore.bookstore".into(),
            "bookstore.bookstore.svc.cluster.local".into(),
        ],
    )])
    .unwrap();
    let mut getent = pod
        .spawn(&["getent", "hosts", "bookstore.bookstore"], &[])
        .unwrap();
    assert!(
        getent.wait_timeout(TIMEOUT).unwrap().success(),
        "{}",
        getent.log_tail(5)
    );
    assert!(getent.stdout().starts_with("10.96.0.10"), "{}", getent.stdout());
    // The host's own resolver is untouched.
    let host = std::process::Command::new("getent")
        .args(["hosts", "bookstore.bookstore"])
        .output()
        .unwrap();
    assert!(!host.status.success());
}

/// A process that ignores nothing is stopped by `terminate`; `wait_for_output` sees its output.
#[test]
fn terminate_and_wait_for_output() {
    if !require_netns_or_skip("terminate_and_wait_for_output") {
        return;
    }
    let hub = Hub::create(PREFIX).unwrap();
    let pod = hub.add_pod(PodSpec::named("p")).unwrap();
    let mut proc = pod
        .spawn(
            &[
                "sh",
                "-c",
                "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
            ],
            &[],
        )
        .unwrap();
    proc.wait_for_output("ready", TIMEOUT).unwrap();
    let status = proc.terminate(TIMEOUT).unwrap();
    assert!(status.success(), "{status}");
    assert!(proc.stdout().contains("bye"));
}

/// With the OSM rules installed, a pod's connections to a virtual Service IP (no such host anywhere) and
/// even to the hub are redirected to the outbound listener port (15001) inside the pod; connections of the
/// proxy UID (1500) are not.
#[test]
fn init_rules_redirect_outbound_except_proxy_uid() {
    if !require_netns_or_skip("init_rules_redirect_outbound_except_proxy_uid") {
        return;
    }
    let hub = Hub::create(PREFIX).unwrap();
    let pod = hub.add_pod(PodSpec::named("app")).unwrap();
    let applied = pod.apply_init(&osm_init::InitConfig::default()).unwrap();
    assert!(applied.contains("OSM_PROXY_OUT_REDIRECT"));
    // Idempotent through the harness too.
    pod.apply_init(&osm_init::InitConfig::default()).unwrap();
    let nat = std::process::Command::new("ip")
        .args(["netns", "exec", pod.netns(), "iptables-save", "-t", "nat"])
        .output()
        .unwrap();
    let nat = String::from_utf8_lossy(&nat.stdout);
    assert_eq!(
        nat.matches("-A OUTPUT -p tcp -j OSM_PROXY_OUTBOUND").count(),
        1,
        "{nat}"
    );

    // Root's connection to a virtual IP lands on the pod's outbound port.
    let server = echo_once(pod.bind_tcp(Ipv4Addr::UNSPECIFIED, 15001).unwrap());
    let vip = SocketAddr::from(([10, 96, 0, 10], 14001));
    assert_eq!(pod.in_netns(move || ping(vip)).unwrap().unwrap(), "ping");
    server.join().unwrap();

    // UID 1500 reaches the hub directly: the hub's listener, not the pod's 15001, gets the connection.
    let hub_listener = hub.bind_tcp(0).unwrap();
    let hub_addr = hub_listener.local_addr().unwrap();
    let at_hub = echo_once(hub_listener);
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}; printf ping >&3; head -c 4 <&3",
        hub_addr.ip(),
        hub_addr.port()
    );
    let mut client = pod.spawn_as(1500, &["bash", "-c", &script], &[]).unwrap();
    assert!(
        client.wait_timeout(TIMEOUT).unwrap().success(),
        "{}",
        client.log_tail(5)
    );
    assert_eq!(client.stdout(), "ping");
    assert_eq!(at_hub.join().unwrap().ip(), IpAddr::V4(pod.ip()));
}

/// Real Envoy runs in a pod as UID 1500 with a static bootstrap, becomes ready, and serves its static
/// listener inside the pod.
#[test]
fn envoy_runs_as_proxy_uid_and_gets_ready() {
    let Some(prereqs) = require_or_skip("envoy_runs_as_proxy_uid_and_gets_ready") else {
        return;
    };
    eprintln!("using Envoy at {}", prereqs.envoy.display());
    let hub = Hub::create(PREFIX).unwrap();
    let pod = hub.add_pod(PodSpec::named("envoy")).unwrap();
    let mut envoy = pod.spawn_envoy(STATIC_BOOTSTRAP).unwrap();
    envoy.wait_ready(Duration::from_secs(60)).unwrap();

    let ps = std::process::Command::new("ps")
        .args(["-o", "uid=", "-p", &envoy.pid().to_string()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout).trim(),
        "1500",
        "{}",
        envoy.log_tail()
    );
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", envoy.pid())).unwrap();
    assert!(comm.starts_with("envoy"), "{comm}");

    assert!(
        envoy
            .admin_get("/server_info")
            .unwrap()
            .contains("\"state\": \"LIVE\"")
    );
    assert!(envoy.admin_get("/listeners").unwrap().contains("hello"));
    assert!(envoy.admin_get("/no-such-admin-path").is_err());
    let listener = SocketAddr::from((pod.ip(), 18080));
    let resp = pod
        .in_netns(move || http_request(listener, "GET", "/", TIMEOUT))
        .unwrap()
        .unwrap();
    assert_eq!((resp.status, resp.body.as_str()), (200, "hello from envoy"));
    let bootstrap_meta = std::fs::metadata(envoy.bootstrap_path()).unwrap();
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    assert_eq!(
        (bootstrap_meta.uid(), bootstrap_meta.permissions().mode() & 0o777),
        (1500, 0o600)
    );
}

const STATIC_BOOTSTRAP: &str = r#"
node: {id: harness-test, cluster: harness}
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: 15000}
static_resources:
  listeners:
  - name: hello
    address:
      socket_address: {address: 0.0.0.0, port_value: 18080}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: hello
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "hello from envoy"}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#;

/// `cleanup_stale` deletes namespaces of a dead run with this prefix and keeps live ones.
#[test]
fn cleanup_stale_removes_only_dead_runs() {
    if !require_netns_or_skip("cleanup_stale_removes_only_dead_runs") {
        return;
    }
    let prefix = "osmhstale";
    // A pid that no process has: above any plausible live pid and checked.
    let dead = (4_000_000..4_194_304)
        .rev()
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    let stale = format!("{prefix}-{dead}-0-hub");
    assert!(
        std::process::Command::new("ip")
            .args(["netns", "add", &stale])
            .status()
            .unwrap()
            .success()
    );
    let live = Hub::create(prefix).unwrap();
    let removed = osm_harness::cleanup_stale(prefix).unwrap();
    let listed = netns_names();
    // Delete our fake first, so a failing assertion does not leave it behind.
    if listed.contains(&stale) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &stale])
            .status();
    }
    assert_eq!(removed, vec![stale.clone()]);
    assert!(!listed.contains(&stale));
    assert!(listed.contains(&live.netns().to_owned()));
}

/// `in_netns` only moves the helper thread: the caller stays in the host namespace.
#[test]
fn in_netns_does_not_move_the_caller() {
    if !require_netns_or_skip("in_netns_does_not_move_the_caller") {
        return;
    }
    let hub = Hub::create(PREFIX).unwrap();
    let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let inside = in_netns(hub.netns(), || {
        std::fs::read_link("/proc/thread-self/ns/net").unwrap()
    })
    .unwrap();
    assert_ne!(own, inside);
    assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), own);
    assert!(in_netns("osmh-no-such-netns", || ()).is_err());
}
