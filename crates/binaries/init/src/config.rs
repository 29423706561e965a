//! What the init step is told: the sidecar's ports and UID plus the pod's exclusion and inclusion lists,
//! with the small value types (`Ipv4Cidr`, `InterfaceName`) that make a rule line safe to render.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::InitError;

/// Envoy's UID in an injected pod (upstream `constants.EnvoyUID`).
pub const PROXY_UID: u32 = 1500;
/// Envoy's inbound listener (`inbound-listener`).
pub const INBOUND_LISTENER_PORT: u16 = 15003;
/// Envoy's outbound listener (`outbound-listener`).
pub const OUTBOUND_LISTENER_PORT: u16 = 15001;
/// Inbound ports that always reach the pod unredirected: the Prometheus listener (15010), the liveness,
/// readiness and startup probe listeners (15901–15903) and the healthcheck port (15904).
pub const ALWAYS_SKIPPED_INBOUND_PORTS: [u16; 5] = [15010, 15901, 15902, 15903, 15904];

/// Settings of one pod's interception rules. `Default` is what upstream OSM renders for a pod without
/// exclusion annotations and an empty MeshConfig traffic section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitConfig {
    /// Envoy's UID: its own outbound connections are not redirected back to itself.
    pub proxy_uid: u32,
    /// Port that inbound TCP is redirected to.
    pub inbound_port: u16,
    /// Port that outbound TCP is redirected to.
    pub outbound_port: u16,
    /// Destination ports of inbound connections that bypass Envoy.
    pub inbound_port_exclusions: Vec<u16>,
    /// Destination ports of outbound connections that bypass Envoy.
    pub outbound_port_exclusions: Vec<u16>,
    /// Destination ranges of outbound connections that bypass Envoy.
    pub outbound_ip_range_exclusions: Vec<Ipv4Cidr>,
    /// When non-empty, only outbound connections to these ranges are redirected.
    pub outbound_ip_range_inclusions: Vec<Ipv4Cidr>,
    /// Interfaces whose traffic (in and out) bypasses Envoy.
    pub network_interface_exclusions: Vec<InterfaceName>,
}

impl Default for InitConfig {
    fn default() -> Self {
        Self {
            proxy_uid: PROXY_UID,
            inbound_port: INBOUND_LISTENER_PORT,
            outbound_port: OUTBOUND_LISTENER_PORT,
            inbound_port_exclusions: Vec::new(),
            outbound_port_exclusions: Vec::new(),
            outbound_ip_range_exclusions: Vec::new(),
            outbound_ip_range_inclusions: Vec::new(),
            network_interface_exclusions: Vec::new(),
        }
    }
}

impl InitConfig {
    /// Checks what the types cannot: no port is 0 (iptables would read `--dport 0` as a real port and
    /// the rule would silently never match).
    pub fn validate(&self) -> Result<(), InitError> {
        let ports = [
            ("inbound_port", std::slice::from_ref(&self.inbound_port)),
            ("outbound_port", std::slice::from_ref(&self.outbound_port)),
            ("inbound_port_exclusions", &self.inbound_port_exclusions[..]),
            ("outbound_port_exclusions", &self.outbound_port_exclusions[..]),
        ];
        for (field, values) in ports {
            if values.contains(&0) {
                return Err(InitError::InvalidConfig(format!(
                    "{field}: port 0 is not a valid port"
                )));
            }
        }
        Ok(())
    }
}

/// Parses one TCP port of an exclusion list (`1..=65535`, surrounding spaces allowed).
pub fn parse_port(s: &str) -> Result<u16, InitError> {
    let invalid = || InitError::InvalidPort(s.trim().to_owned());
    match s.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid()),
        Ok(port) => Ok(port),
    }
}

/// Parses a comma-separated list as the pod annotations write it (`"a, b,c"`); empty items are ignored
/// so an empty annotation means an empty list.
pub fn parse_list<T>(s: &str, item: impl Fn(&str) -> Result<T, InitError>) -> Result<Vec<T>, InitError> {
    s.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(item)
        .collect()
}

/// An IPv4 range in CIDR notation. It displays as the network address (`10.1.2.3/8` → `10.0.0.0/8`),
/// which is what `iptables-save` prints back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// A range from any address inside it and a prefix length (0..=32).
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self, InitError> {
        if prefix_len > 32 {
            return Err(InitError::InvalidCidr(format!("{addr}/{prefix_len}")));
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
        Ok(Self {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix_len,
        })
    }

    /// The first address of the range.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }
}

impl FromStr for Ipv4Cidr {
    type Err = InitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let invalid = || InitError::InvalidCidr(s.to_owned());
        // A bare address is refused, like upstream's net.ParseCIDR: a forgotten `/32` usually means the
        // user meant a wider range.
        let (addr, len) = s.split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        // `u8::from_str` would accept "+8"; only plain digits are a prefix length.
        if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let len: u8 = len.parse().map_err(|_| invalid())?;
        Self::new(addr, len).map_err(|_| invalid())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// A network interface name as iptables' `-i`/`-o` take it: 1–15 bytes of letters, digits and
/// `-_.@`, optionally ending in the `+` wildcard. Anything else (spaces, newlines) could change the meaning
/// of the rendered restore input, so it is refused here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InterfaceName(String);

impl InterfaceName {
    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for InterfaceName {
    type Err = InitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let body = s.strip_suffix('+').unwrap_or(s);
        let ok = !body.is_empty()
            && s.len() <= 15
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InitError::InvalidInterface(s.to_owned()))
        }
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_masks_host_bits() {
        let cidr: Ipv4Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.0.0.0/8");
        assert_eq!(
            " 192.168.1.7/32 ".parse::<Ipv4Cidr>().unwrap().to_string(),
            "192.168.1.7/32"
        );
        assert_eq!("1.2.3.4/0".parse::<Ipv4Cidr>().unwrap().to_string(), "0.0.0.0/0");
    }

    #[test]
    fn cidr_refuses_bad_input() {
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0/8",
            "fd00::/8",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "x/8",
            "",
        ] {
            let err = bad.parse::<Ipv4Cidr>().unwrap_err();
            assert!(matches!(err, InitError::InvalidCidr(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn ports_and_lists_parse_like_annotations() {
        assert_eq!(
            parse_list(" 80, 443,,8080 ", parse_port).unwrap(),
            vec![80, 443, 8080]
        );
        assert_eq!(parse_list("", parse_port).unwrap(), Vec::<u16>::new());
        assert!(matches!(parse_list("80,0", parse_port), Err(InitError::InvalidPort(p)) if p == "0"));
        assert!(matches!(
            parse_list("80,65536", parse_port),
            Err(InitError::InvalidPort(_))
        ));
        assert!(matches!(
            parse_list("http", parse_port),
            Err(InitError::InvalidPort(_))
        ));
    }

    #[test]
    fn interface_names_are_checked() {
        for good in ["eth0", "net1", "veth+", "br-lan", "wg0.1", "abcdefghijklmno"] {
            assert_eq!(good.parse::<InterfaceName>().unwrap().as_str(), good);
        }
        for bad in ["", "+", "eth 0", "eth0\n-A", "abcdefghijklmnop", "a/b", "lo,eth0"] {
            assert!(bad.parse::<InterfaceName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_matches_upstream() {
        let cfg = InitConfig::default();
        assert_eq!(
            (cfg.proxy_uid, cfg.inbound_port, cfg.outbound_port),
            (1500, 15003, 15001)
        );
        cfg.validate().unwrap();
        let zero = InitConfig {
            outbound_port_exclusions: vec![0],
            ..InitConfig::default()
        };
        assert!(zero.validate().is_err());
    }
}
