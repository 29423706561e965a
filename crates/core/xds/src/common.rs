//! Small builders shared by the per-type modules.

use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, CidrRange, ConfigSource, DataSource, SocketAddress,
    TransportSocket, address, config_source, data_source, socket_address, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig;
use envoy_types::pb::google::protobuf::Duration;
use prost::{Message, Name};

use crate::resource::to_any;

/// Fetch over the ADS stream the proxy already has.
pub fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

pub fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads()),
    }
}

/// `addr/prefix_len` as Envoy matches it.
pub fn cidr(addr: std::net::IpAddr, prefix_len: u8) -> CidrRange {
    CidrRange {
        address_prefix: addr.to_string(),
        prefix_len: Some(envoy_types::pb::google::protobuf::UInt32Value {
            value: prefix_len.into(),
        }),
    }
}

pub fn socket_address(ip: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port.into())),
            ..Default::default()
        })),
    }
}

pub fn inline(s: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineString(s.to_string())),
        ..Default::default()
    }
}

pub fn seconds(s: i64) -> Duration {
    Duration { seconds: s, nanos: 0 }
}

pub fn millis(ms: u64) -> Duration {
    Duration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

pub fn tls_transport_socket<M: Message + Name>(ctx: &M) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(to_any(ctx))),
    }
}

/// How every HTTP connection manager the mesh generates (inbound, outbound, metrics, probes) treats
/// the request path before routing, RBAC and forwarding, so that a route or an RBAC rule always judges
/// the path the app will act on:
/// - `normalize_path`: RFC 3986 normalisation — dot-segments resolved (`/books/../admin` → `/admin`,
///   `%2e` counting as `.`), unreserved characters unescaped;
/// - `merge_slashes`: `//admin` → `/admin`;
/// - escaped slashes and backslashes (`%2F`, `%5C`, any case) are **refused with 400**, not unescaped:
///   after unescaping, `/books%2F..%2Fadmin` would be a new dot-segment path that an app may resolve to
///   `/admin` behind the route's back. Unescape-and-redirect would only help clients that follow
///   redirects; refusing fails closed, and a path that really needs an encoded slash is rare inside a mesh.
pub mod path_normalization {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::PathWithEscapedSlashesAction,
    };
    use envoy_types::pb::google::protobuf::BoolValue;
    use serde_json::{Value, json};

    pub const NORMALIZE_PATH: bool = true;
    pub const MERGE_SLASHES: bool = true;
    pub const ESCAPED_SLASHES: PathWithEscapedSlashesAction = PathWithEscapedSlashesAction::RejectRequest;

    /// `hcm` with the mesh's path handling.
    pub fn apply(hcm: HttpConnectionManager) -> HttpConnectionManager {
        HttpConnectionManager {
            normalize_path: Some(BoolValue {
                value: NORMALIZE_PATH,
            }),
            merge_slashes: MERGE_SLASHES,
            path_with_escaped_slashes_action: ESCAPED_SLASHES as i32,
            ..hcm
        }
    }

    /// The same settings as fields of a bootstrap (JSON) HTTP connection manager.
    pub fn json_fields() -> Value {
        json!({
            "normalize_path": NORMALIZE_PATH,
            "merge_slashes": MERGE_SLASHES,
            "path_with_escaped_slashes_action": ESCAPED_SLASHES.as_str_name(),
        })
    }
}
