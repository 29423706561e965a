//! Rendering the interception rules as `iptables-restore --noflush` input.
//!
//! The rules follow upstream OSM's init container (v1.2): four chains in the nat table, entered from
//! `PREROUTING` (inbound) and `OUTPUT` (outbound) for TCP only.
//!
//! Idempotency: the input declares our four chains (`:CHAIN - [0:0]`), and under `--noflush` a declared
//! chain is created when missing and *flushed* when present, so their bodies are replaced as a whole on
//! every run. The two jumps live in built-in chains that we must not flush (other software may own rules
//! there), so they are rendered only when `iptables-save` shows them missing; surplus copies left by an
//! older, non-idempotent init are deleted. Deleting every copy and re-adding one would be simpler but
//! would move our jump behind rules added after us, changing the order the pod already runs with.

use std::fmt::Write as _;

use crate::config::{ALWAYS_SKIPPED_INBOUND_PORTS, InitConfig};

/// Chain entered from `PREROUTING` for inbound TCP.
pub const INBOUND_CHAIN: &str = "OSM_PROXY_INBOUND";
/// Chain that redirects to Envoy's inbound listener.
pub const IN_REDIRECT_CHAIN: &str = "OSM_PROXY_IN_REDIRECT";
/// Chain entered from `OUTPUT` for outbound TCP.
pub const OUTBOUND_CHAIN: &str = "OSM_PROXY_OUTBOUND";
/// Chain that redirects to Envoy's outbound listener.
pub const OUT_REDIRECT_CHAIN: &str = "OSM_PROXY_OUT_REDIRECT";

/// The jump into our inbound chain, exactly as `iptables-save` prints it.
const PREROUTING_JUMP: &str = "PREROUTING -p tcp -j OSM_PROXY_INBOUND";
/// The jump into our outbound chain, exactly as `iptables-save` prints it.
const OUTPUT_JUMP: &str = "OUTPUT -p tcp -j OSM_PROXY_OUTBOUND";

/// `-m multiport` takes at most 15 ports per rule.
const MULTIPORT_MAX: usize = 15;

/// Renders the `iptables-restore --noflush` input that installs the interception rules.
///
/// `existing_nat` is the current output of `iptables-save -t nat` in the target network namespace (empty
/// for a fresh one); it only decides whether the two jumps from built-in chains are added, kept or
/// de-duplicated. The result is a single nat-table transaction: it applies completely or not at all.
/// The config is expected to have passed [`InitConfig::validate`].
pub fn render_restore(cfg: &InitConfig, existing_nat: &str) -> String {
    let mut out = String::new();
    out.push_str("# OSM sidecar interception rules (osm-init)\n*nat\n");
    for chain in [
        INBOUND_CHAIN,
        IN_REDIRECT_CHAIN,
        OUTBOUND_CHAIN,
        OUT_REDIRECT_CHAIN,
    ] {
        // Declaring the chain creates or flushes it: this is what makes re-running safe.
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for rule in rules(cfg) {
        let _ = writeln!(out, "-A {rule}");
    }
    for jump in [PREROUTING_JUMP, OUTPUT_JUMP] {
        match count_rule(existing_nat, jump) {
            0 => {
                let _ = writeln!(out, "-A {jump}");
            }
            n => {
                // `-D` by specification removes the first match; n - 1 deletions leave exactly one copy.
                for _ in 1..n {
                    let _ = writeln!(out, "-D {jump}");
                }
            }
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// The bodies of our four chains, in evaluation order, as `CHAIN args…` (without `-A`).
fn rules(cfg: &InitConfig) -> Vec<String> {
    let uid = cfg.proxy_uid;
    let mut rules = Vec::new();

    // Inbound: excluded interfaces and ports, then the ports Envoy itself serves unredirected (metrics,
    // probes, healthcheck), then everything else to the inbound listener.
    rules.push(format!(
        "{IN_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-port {}",
        cfg.inbound_port
    ));
    for iface in &cfg.network_interface_exclusions {
        rules.push(format!("{INBOUND_CHAIN} -i {iface} -j RETURN"));
    }
    for ports in multiport_lists(&cfg.inbound_port_exclusions) {
        rules.push(format!(
            "{INBOUND_CHAIN} -p tcp -m multiport --dports {ports} -j RETURN"
        ));
    }
    for port in ALWAYS_SKIPPED_INBOUND_PORTS {
        rules.push(format!("{INBOUND_CHAIN} -p tcp --dport {port} -j RETURN"));
    }
    rules.push(format!("{INBOUND_CHAIN} -p tcp -j {IN_REDIRECT_CHAIN}"));

    // Outbound. Upstream also appends "--dport 15000 -j ACCEPT" to the redirect chain, after the
    // REDIRECT; REDIRECT is terminating, so that rule can never match and is left out.
    rules.push(format!(
        "{OUT_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-port {}",
        cfg.outbound_port
    ));
    // Envoy calling its own pod's app through a Service IP leaves through lo with a non-loopback
    // destination: send it to the inbound listener so inbound policy applies (app → outbound listener →
    // inbound listener → app).
    rules.push(format!(
        "{OUTBOUND_CHAIN} -o lo ! -d 127.0.0.1/32 -m owner --uid-owner {uid} -j {IN_REDIRECT_CHAIN}"
    ));
    // The app talking to itself over lo (e.g. via the pod IP) stays local.
    rules.push(format!(
        "{OUTBOUND_CHAIN} -o lo -m owner ! --uid-owner {uid} -j RETURN"
    ));
    // Envoy's own upstream connections must not loop back into Envoy.
    rules.push(format!("{OUTBOUND_CHAIN} -m owner --uid-owner {uid} -j RETURN"));
    rules.push(format!("{OUTBOUND_CHAIN} -d 127.0.0.1/32 -j RETURN"));
    for iface in &cfg.network_interface_exclusions {
        rules.push(format!("{OUTBOUND_CHAIN} -o {iface} -j RETURN"));
    }
    // Exclusions come before inclusions: an excluded range inside an included one is excluded.
    for cidr in &cfg.outbound_ip_range_exclusions {
        rules.push(format!("{OUTBOUND_CHAIN} -d {cidr} -j RETURN"));
    }
    for ports in multiport_lists(&cfg.outbound_port_exclusions) {
        rules.push(format!(
            "{OUTBOUND_CHAIN} -p tcp -m multiport --dports {ports} -j RETURN"
        ));
    }
    if cfg.outbound_ip_range_inclusions.is_empty() {
        rules.push(format!("{OUTBOUND_CHAIN} -j {OUT_REDIRECT_CHAIN}"));
    } else {
        for cidr in &cfg.outbound_ip_range_inclusions {
            rules.push(format!("{OUTBOUND_CHAIN} -d {cidr} -j {OUT_REDIRECT_CHAIN}"));
        }
        rules.push(format!("{OUTBOUND_CHAIN} -j RETURN"));
    }
    rules
}

/// Ports joined for `--dports`, split into groups of at most 15 (upstream renders one rule and fails to
/// apply beyond 15 ports). Duplicates are dropped, first occurrence wins.
fn multiport_lists(ports: &[u16]) -> Vec<String> {
    let mut unique: Vec<u16> = Vec::with_capacity(ports.len());
    for &port in ports {
        if !unique.contains(&port) {
            unique.push(port);
        }
    }
    unique
        .chunks(MULTIPORT_MAX)
        .map(|chunk| chunk.iter().map(u16::to_string).collect::<Vec<_>>().join(","))
        .collect()
}

/// How many times `-A <rule>` appears in the nat section of an `iptables-save` dump. Tokens are compared
/// with whitespace normalised, so spacing differences between iptables versions do not matter.
fn count_rule(dump: &str, rule: &str) -> usize {
    let want: Vec<&str> = rule.split_whitespace().collect();
    let mut in_nat = true;
    let mut count = 0;
    for line in dump.lines() {
        let line = line.trim();
        if let Some(table) = line.strip_prefix('*') {
            // `iptables-save -t nat` prints only nat, but a full dump must not match other tables.
            in_nat = table == "nat";
            continue;
        }
        let mut tokens = line.split_whitespace();
        if in_nat && tokens.next() == Some("-A") && tokens.eq(want.iter().copied()) {
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{InterfaceName, Ipv4Cidr};

    fn cidrs(list: &[&str]) -> Vec<Ipv4Cidr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// A fresh namespace: the nat table only has its built-in chains.
    const FRESH: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
";

    /// The defaults in a fresh pod: upstream's rule set plus both jumps.
    #[test]
    fn default_config_fresh_namespace() {
        insta::assert_snapshot!(render_restore(&InitConfig::default(), FRESH));
    }

    /// An empty dump (a namespace where the nat table was never touched) renders the same as a fresh one.
    #[test]
    fn empty_dump_is_fresh() {
        assert_eq!(
            render_restore(&InitConfig::default(), ""),
            render_restore(&InitConfig::default(), FRESH)
        );
    }

    /// Every list filled: exclusions before inclusions, interface exclusions both ways, and a catch-all
    /// RETURN after the included ranges.
    #[test]
    fn all_lists() {
        let cfg = InitConfig {
            inbound_port_exclusions: vec![8080, 9090],
            outbound_port_exclusions: vec![6379],
            outbound_ip_range_exclusions: cidrs(&["169.254.169.254/32", "10.1.2.3/16"]),
            outbound_ip_range_inclusions: cidrs(&["10.96.0.0/12"]),
            network_interface_exclusions: vec!["net1".parse::<InterfaceName>().unwrap()],
            ..InitConfig::default()
        };
        insta::assert_snapshot!(render_restore(&cfg, FRESH));
    }

    /// A second run: the dump already holds our chains and jumps, so only the chain bodies are
    /// re-declared (flushed and refilled) and no jump is appended again.
    #[test]
    fn second_run_adds_no_jumps() {
        let first = render_restore(&InitConfig::default(), FRESH);
        let dump = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:OSM_PROXY_INBOUND - [0:0]\n\
                    -A PREROUTING -p tcp -j OSM_PROXY_INBOUND\n-A OUTPUT  -p tcp -j OSM_PROXY_OUTBOUND\n\
                    -A OSM_PROXY_INBOUND -p tcp -m tcp --dport 15010 -j RETURN\nCOMMIT\n";
        let second = render_restore(&InitConfig::default(), dump);
        insta::assert_snapshot!(second);
        let without_jumps: Vec<&str> = first
            .lines()
            .filter(|l| *l != format!("-A {PREROUTING_JUMP}") && *l != format!("-A {OUTPUT_JUMP}"))
            .collect();
        assert_eq!(second.lines().collect::<Vec<_>>(), without_jumps);
    }

    /// Jumps duplicated by an older non-idempotent init are reduced to one copy.
    #[test]
    fn duplicate_jumps_are_removed() {
        let dump = "*nat\n-A PREROUTING -p tcp -j OSM_PROXY_INBOUND\n-A PREROUTING -p tcp -j OSM_PROXY_INBOUND\n\
                    -A PREROUTING -p tcp -j OSM_PROXY_INBOUND\n-A OUTPUT -p tcp -j OSM_PROXY_OUTBOUND\nCOMMIT\n";
        let out = render_restore(&InitConfig::default(), dump);
        assert_eq!(out.matches(&format!("-D {PREROUTING_JUMP}\n")).count(), 2);
        assert_eq!(out.matches(&format!("{OUTPUT_JUMP}\n")).count(), 0);
        assert!(out.ends_with("COMMIT\n"));
    }

    /// Jumps in other tables, or to other chains, do not count as ours.
    #[test]
    fn only_nat_jumps_count() {
        let dump = "*mangle\n-A PREROUTING -p tcp -j OSM_PROXY_INBOUND\nCOMMIT\n*nat\n\
                    -A OUTPUT -p tcp -j OSM_PROXY_OUTBOUND_X\n-A OUTPUT -p udp -j OSM_PROXY_OUTBOUND\nCOMMIT\n";
        assert_eq!(count_rule(dump, PREROUTING_JUMP), 0);
        assert_eq!(count_rule(dump, OUTPUT_JUMP), 0);
    }

    /// More than 15 excluded ports are split over several multiport rules; duplicates are dropped.
    #[test]
    fn multiport_groups_of_fifteen() {
        let ports: Vec<u16> = (1..=20).chain([3, 5]).collect();
        let lists = multiport_lists(&ports);
        assert_eq!(
            lists,
            vec![
                "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15".to_owned(),
                "16,17,18,19,20".to_owned()
            ]
        );
        assert!(multiport_lists(&[]).is_empty());
    }

    /// Custom UID and listener ports appear wherever upstream uses the constants.
    #[test]
    fn custom_uid_and_ports() {
        let cfg = InitConfig {
            proxy_uid: 1337,
            inbound_port: 16003,
            outbound_port: 16001,
            ..InitConfig::default()
        };
        let out = render_restore(&cfg, "");
        assert_eq!(out.matches("--uid-owner 1337").count(), 3);
        assert!(out.contains("-A OSM_PROXY_IN_REDIRECT -p tcp -j REDIRECT --to-port 16003\n"));
        assert!(out.contains("-A OSM_PROXY_OUT_REDIRECT -p tcp -j REDIRECT --to-port 16001\n"));
        assert!(!out.contains("1500"));
    }
}
