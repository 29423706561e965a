//! UpstreamTrafficSetting local rate limits in the upstream's own sidecar, as upstream OSM builds them:
//! connections by a network `local_ratelimit` filter after RBAC on the inbound chain (stat prefix the
//! chain's name), requests by the HTTP `local_ratelimit` filter, enabled per virtual host (stat prefix
//! `http_local_rate_limiter`); a refused request gets 429 (or the configured status) from Envoy.

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent, header_value_option,
};
use envoy_types::pb::envoy::config::listener::v3::Filter;
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit as HttpLocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::local_ratelimit::v3::LocalRateLimit as NetworkLocalRateLimit;
use envoy_types::pb::envoy::r#type::v3::{
    FractionalPercent, HttpStatus, TokenBucket as EnvoyTokenBucket, fractional_percent,
};
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};
use osm_model::{HttpRateLimit, TokenBucket};

use crate::resource::to_any;

pub const NETWORK_FILTER: &str = "envoy.filters.network.local_ratelimit";
pub const HTTP_FILTER: &str = "envoy.filters.http.local_ratelimit";
/// Stat prefix of the per-virtual-host HTTP limit (upstream's).
pub const HTTP_STAT_PREFIX: &str = "http_local_rate_limiter";

fn bucket(b: &TokenBucket) -> EnvoyTokenBucket {
    EnvoyTokenBucket {
        max_tokens: b.max_tokens,
        tokens_per_fill: Some(UInt32Value {
            value: b.tokens_per_fill,
        }),
        fill_interval: Some(Duration {
            seconds: i64::try_from(b.fill_interval_secs).unwrap_or(i64::MAX),
            nanos: 0,
        }),
    }
}

/// The network filter limiting new connections on a chain.
pub fn connections(b: &TokenBucket, stat_prefix: &str) -> Filter {
    Filter {
        name: NETWORK_FILTER.to_string(),
        config_type: Some(
            envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(to_any(
                &NetworkLocalRateLimit {
                    stat_prefix: stat_prefix.to_string(),
                    token_bucket: Some(bucket(b)),
                    ..Default::default()
                },
            )),
        ),
    }
}

/// The HTTP filter, without a bucket of its own: each virtual host enables it (`per_virtual_host`).
pub fn http_filter(stat_prefix: &str) -> HttpFilter {
    HttpFilter {
        name: HTTP_FILTER.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(to_any(
            &HttpLocalRateLimit {
                stat_prefix: stat_prefix.to_string(),
                ..Default::default()
            },
        ))),
        ..Default::default()
    }
}

fn always() -> Option<RuntimeFractionalPercent> {
    Some(RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator: 100,
            denominator: fractional_percent::DenominatorType::Hundred as i32,
        }),
        runtime_key: String::new(),
    })
}

/// The per-virtual-host configuration enforcing `limit`.
pub fn per_virtual_host(limit: &HttpRateLimit) -> Any {
    to_any(&HttpLocalRateLimit {
        stat_prefix: HTTP_STAT_PREFIX.to_string(),
        token_bucket: Some(bucket(&limit.bucket)),
        filter_enabled: always(),
        filter_enforced: always(),
        status: limit.status.map(|code| HttpStatus {
            code: i32::try_from(code).unwrap_or(429),
        }),
        response_headers_to_add: limit
            .response_headers
            .iter()
            .map(|(k, v)| HeaderValueOption {
                header: Some(HeaderValue {
                    key: k.clone(),
                    value: v.clone(),
                    ..Default::default()
                }),
                append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}
