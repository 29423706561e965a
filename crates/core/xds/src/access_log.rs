//! The sidecar's access log: one JSON object per HTTP request (HTTP connection managers) or per TCP
//! connection (TCP proxies), on Envoy's stdout, with upstream OSM v1.2.4's keys, so log pipelines built
//! for upstream's sidecars keep parsing them. MeshConfig `spec.observability.enableAccessLog: false`
//! (ours, not upstream's) turns it off; the model carries that into each intent's `access_log`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log};
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::StdoutAccessLog;
use envoy_types::pb::google::protobuf::{Any, Value, value};
use prost::Name;

/// Upstream's JSON keys and the Envoy command operator each one holds.
pub const FIELDS: [(&str, &str); 19] = [
    ("start_time", "%START_TIME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    ("time_to_first_byte", "%RESPONSE_DURATION%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    ("upstream_service_time", "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
];

/// The logger's name (Envoy's extension name for [`StdoutAccessLog`]).
pub const LOGGER_NAME: &str = "envoy.access_loggers.stdout";

/// Built and encoded once; every HTTP connection manager and TCP proxy gets a copy.
static STDOUT_JSON: LazyLock<AccessLog> = LazyLock::new(stdout_json);

/// The access logs of one HCM or TCP proxy: the shared stdout JSON logger, or none when turned off.
pub fn access_logs(enabled: bool) -> Vec<AccessLog> {
    if enabled {
        vec![STDOUT_JSON.clone()]
    } else {
        Vec::new()
    }
}

/// `google.protobuf.Struct` with its fields in key order. envoy-types' `Struct` holds a `HashMap`,
/// which encodes in a different order on every run, while a resource's version is the hash of its
/// bytes: listeners would look changed to every sidecar after a controller restart.
#[derive(Clone, PartialEq, prost::Message)]
struct SortedStruct {
    #[prost(btree_map = "string, message", tag = "1")]
    fields: BTreeMap<String, Value>,
}

fn stdout_json() -> AccessLog {
    let fields = FIELDS
        .iter()
        .map(|(key, operator)| {
            let value = Value {
                kind: Some(value::Kind::StringValue((*operator).to_string())),
            };
            (key.to_string(), value)
        })
        .collect();
    // StdoutAccessLog { log_format (1): SubstitutionFormatString { json_format (2): Struct } },
    // written field by field so the Struct keeps its order.
    let mut format = Vec::new();
    prost::encoding::message::encode(2, &SortedStruct { fields }, &mut format);
    let mut stdout = Vec::new();
    prost::encoding::bytes::encode(1, &format, &mut stdout);
    AccessLog {
        name: LOGGER_NAME.to_string(),
        config_type: Some(access_log::ConfigType::TypedConfig(Any {
            type_url: StdoutAccessLog::type_url(),
            value: stdout,
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::substitution_format_string::Format;
    use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::stdout_access_log;
    use prost::Message;

    use super::*;

    fn encoded(log: &AccessLog) -> &[u8] {
        match &log.config_type {
            Some(access_log::ConfigType::TypedConfig(any)) => &any.value,
            other => panic!("not a typed config: {other:?}"),
        }
    }

    /// The hand-written encoding decodes as Envoy will read it: a stdout logger whose JSON format maps
    /// exactly upstream's keys to their command operators.
    #[test]
    fn access_log_decodes_to_upstream_json_format() {
        let log = stdout_json();
        assert_eq!(log.name, LOGGER_NAME);
        let stdout = StdoutAccessLog::decode(encoded(&log)).expect("decodes");
        let Some(stdout_access_log::AccessLogFormat::LogFormat(format)) = stdout.access_log_format else {
            panic!("no log format: {stdout:?}");
        };
        let Some(Format::JsonFormat(json)) = format.format else {
            panic!("not a JSON format: {format:?}");
        };
        let decoded: BTreeMap<String, String> = json
            .fields
            .into_iter()
            .map(|(k, v)| match v.kind {
                Some(value::Kind::StringValue(s)) => (k, s),
                other => panic!("{k}: not a string: {other:?}"),
            })
            .collect();
        let expected: BTreeMap<String, String> = FIELDS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(decoded, expected);
    }

    /// Two builds give the same bytes (a `HashMap`-backed Struct would not: each map has its own
    /// random order), so listener versions survive a restart.
    #[test]
    fn access_log_encoding_is_stable() {
        let first = stdout_json();
        for _ in 0..8 {
            assert_eq!(encoded(&stdout_json()), encoded(&first));
        }
        assert_eq!(access_logs(true), vec![first]);
        assert!(access_logs(false).is_empty());
    }
}
