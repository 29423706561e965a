//! `osm-init`: installs the sidecar interception rules in the current network namespace.
//!
//! Flags mirror the pod annotations (`openservicemesh.io/outbound-port-exclusion-list` →
//! `--outbound-port-exclusion-list`, ...), each a comma-separated list. `--dry-run` prints the
//! `iptables-restore` input for a fresh namespace and touches nothing.
//!
//! `osm-init healthcheck` instead runs the server answering rewritten TCP probes (upstream's
//! `osm-healthcheck` container; see `osm_init::healthcheck`), so the init image carries both.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use osm_init::{InitConfig, InterfaceName, Ipv4Cidr, SystemRunner};

/// A parsed comma-separated flag value. A newtype, because clap would read a bare `Vec<T>` field as a
/// repeated flag.
#[derive(Debug, Clone, Default)]
struct List<T>(Vec<T>);

fn list<T>(
    item: fn(&str) -> Result<T, osm_init::InitError>,
) -> impl Fn(&str) -> Result<List<T>, String> + Clone {
    move |s| osm_init::parse_list(s, item).map(List).map_err(|e| e.to_string())
}

fn port(s: &str) -> Result<u16, osm_init::InitError> {
    osm_init::parse_port(s)
}

fn cidr(s: &str) -> Result<Ipv4Cidr, osm_init::InitError> {
    s.parse()
}

fn iface(s: &str) -> Result<InterfaceName, osm_init::InitError> {
    s.parse()
}

/// Set up OSM sidecar traffic interception (nat table, applied atomically; safe to run twice).
#[derive(Debug, Parser)]
#[command(name = "osm-init", version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Outbound destination ranges that bypass the proxy, e.g. `169.254.169.254/32,10.0.0.0/8`.
    #[arg(long, value_name = "CIDRS", default_value = "", value_parser = list(cidr))]
    outbound_ip_range_exclusion_list: List<Ipv4Cidr>,
    /// If set, only outbound connections to these ranges go through the proxy.
    #[arg(long, value_name = "CIDRS", default_value = "", value_parser = list(cidr))]
    outbound_ip_range_inclusion_list: List<Ipv4Cidr>,
    /// Outbound destination ports that bypass the proxy.
    #[arg(long, value_name = "PORTS", default_value = "", value_parser = list(port))]
    outbound_port_exclusion_list: List<u16>,
    /// Inbound destination ports that bypass the proxy.
    #[arg(long, value_name = "PORTS", default_value = "", value_parser = list(port))]
    inbound_port_exclusion_list: List<u16>,
    /// Network interfaces whose traffic bypasses the proxy.
    #[arg(long, value_name = "IFACES", default_value = "", value_parser = list(iface))]
    network_interface_exclusion_list: List<InterfaceName>,
    /// UID the proxy runs as; its own traffic is not intercepted.
    #[arg(long, value_name = "UID", default_value_t = osm_init::PROXY_UID)]
    proxy_uid: u32,
    /// Port of the proxy's inbound listener.
    #[arg(long, value_name = "PORT", default_value_t = osm_init::INBOUND_LISTENER_PORT, value_parser = port)]
    inbound_port: u16,
    /// Port of the proxy's outbound listener.
    #[arg(long, value_name = "PORT", default_value_t = osm_init::OUTBOUND_LISTENER_PORT, value_parser = port)]
    outbound_port: u16,
    /// Print the iptables-restore input (as for a fresh namespace) instead of applying it.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Answer the kubelet's rewritten TCP probes: `GET /osm-healthcheck` with header
    /// `Original-Tcp-Port: N` → 200 if 127.0.0.1:N accepts a connection, else 503.
    Healthcheck {
        /// Port to listen on (all addresses).
        #[arg(long, value_name = "PORT", default_value_t = osm_init::healthcheck::DEFAULT_LISTEN_PORT, value_parser = port)]
        listen_port: u16,
        /// The only ports checks may dial, comma-separated (the pod's TCP probe ports; the injector
        /// writes them). Empty: any.
        #[arg(long, value_name = "PORTS", value_delimiter = ',', value_parser = port)]
        allowed_ports: Vec<u16>,
    },
}

impl Args {
    fn config(&self) -> InitConfig {
        InitConfig {
            proxy_uid: self.proxy_uid,
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            inbound_port_exclusions: self.inbound_port_exclusion_list.0.clone(),
            outbound_port_exclusions: self.outbound_port_exclusion_list.0.clone(),
            outbound_ip_range_exclusions: self.outbound_ip_range_exclusion_list.0.clone(),
            outbound_ip_range_inclusions: self.outbound_ip_range_inclusion_list.0.clone(),
            network_interface_exclusions: self.network_interface_exclusion_list.0.clone(),
        }
    }
}

fn healthcheck(listen_port: u16, allowed_ports: &[u16]) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, listen_port))
        .with_context(|| format!("listening on port {listen_port}"))?;
    eprintln!("osm-healthcheck: listening on {}", listener.local_addr()?);
    osm_init::healthcheck::serve(listener, allowed_ports).context("accepting connections")
}

fn run(args: &Args) -> anyhow::Result<()> {
    if let Some(Command::Healthcheck {
        listen_port,
        allowed_ports,
    }) = &args.command
    {
        return healthcheck(*listen_port, allowed_ports);
    }
    let cfg = args.config();
    cfg.validate()?;
    if args.dry_run {
        print!("{}", osm_init::render_restore(&cfg, ""));
        return Ok(());
    }
    let applied = osm_init::apply(&cfg, &SystemRunner::new()).context("applying the interception rules")?;
    // Like upstream's init container, show what was applied: it ends up in the pod's init logs.
    eprint!("{applied}");
    eprintln!("osm-init: interception rules applied");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("osm-init: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("osm-init").chain(args.iter().copied()))
    }

    /// No flags: upstream's defaults.
    #[test]
    fn defaults() {
        assert_eq!(parse(&[]).unwrap().config(), InitConfig::default());
    }

    /// Annotation-style lists (spaces, trailing commas) fill the config.
    #[test]
    fn lists() {
        let args = parse(&[
            "--outbound-ip-range-exclusion-list",
            "169.254.169.254/32, 10.0.0.0/8,",
            "--outbound-ip-range-inclusion-list=10.96.0.0/12",
            "--outbound-port-exclusion-list",
            "6379,5432",
            "--inbound-port-exclusion-list",
            "9090",
            "--network-interface-exclusion-list",
            "net1",
            "--proxy-uid",
            "1337",
        ])
        .unwrap();
        let cfg = args.config();
        assert_eq!(cfg.outbound_ip_range_exclusions.len(), 2);
        assert_eq!(cfg.outbound_ip_range_inclusions[0].to_string(), "10.96.0.0/12");
        assert_eq!(cfg.outbound_port_exclusions, vec![6379, 5432]);
        assert_eq!(cfg.inbound_port_exclusions, vec![9090]);
        assert_eq!(cfg.network_interface_exclusions[0].as_str(), "net1");
        assert_eq!(cfg.proxy_uid, 1337);
    }

    /// `healthcheck` is a subcommand with its own port flag; it does not mix with the rules' flags.
    #[test]
    fn healthcheck_probe_subcommand() {
        let args = parse(&["healthcheck"]).unwrap();
        assert!(matches!(
            args.command,
            Some(Command::Healthcheck { listen_port: 15904, ref allowed_ports }) if allowed_ports.is_empty()
        ));
        let args = parse(&[
            "healthcheck",
            "--listen-port",
            "16000",
            "--allowed-ports=5432,6000",
        ])
        .unwrap();
        assert!(matches!(
            args.command,
            Some(Command::Healthcheck { listen_port: 16000, ref allowed_ports }) if allowed_ports == &[5432, 6000]
        ));
        assert!(parse(&["healthcheck", "--allowed-ports=0"]).is_err());
        assert!(parse(&["healthcheck", "--listen-port", "0"]).is_err());
        assert!(parse(&["--dry-run", "healthcheck"]).is_err());
    }

    /// A bad value is refused with the flag's name in the message.
    #[test]
    fn errors_name_the_flag() {
        for (flag, value) in [
            ("--outbound-ip-range-exclusion-list", "10.0.0.0/8,bogus"),
            ("--outbound-ip-range-inclusion-list", "10.0.0.0"),
            ("--outbound-port-exclusion-list", "80,99999"),
            ("--inbound-port-exclusion-list", "0"),
            ("--network-interface-exclusion-list", "eth 0"),
        ] {
            let err = parse(&[flag, value]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(flag), "{flag}: {text}");
            assert_eq!(err.exit_code(), 2);
        }
    }
}
