//! `specs.smi-spec.io/v1alpha4` route specs: `HTTPRouteGroup` (HTTP matches by path regex, method and
//! headers) and `TCPRoute` (TCP matches by port). TrafficTarget rules refer to these by name.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{Errors, Validate, ValidationErrors};

/// The method wildcard: `methods: ["*"]` matches any method.
pub const METHOD_ANY: &str = "*";
/// Methods an `HTTPRouteGroup` match may name (besides `*`).
pub const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "PUT", "POST", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// A named group of HTTP matches.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "specs.smi-spec.io",
    version = "v1alpha4",
    kind = "HTTPRouteGroup",
    plural = "httproutegroups",
    shortname = "htr",
    namespaced,
    derive = "PartialEq",
    doc = "SMI HTTPRouteGroup: named HTTP matches (path regex, methods, headers)."
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteGroupSpec {
    /// Match conditions of this route group.
    pub matches: Vec<HttpMatch>,
}

/// One HTTP match; a request matches when the path regex, one of the methods and every header
/// regex match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    /// Name of the HTTP route, referred to by TrafficTarget rule `matches`.
    pub name: String,
    /// URI path regex (RE2 syntax, matched against the whole path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// The HTTP methods of this route; `*` means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {
        "type": "string",
        "enum": ["*", "GET", "HEAD", "PUT", "POST", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
    }))]
    pub methods: Vec<String>,
    /// Header conditions: a list of single-entry maps, header name → value regex.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<BTreeMap<String, String>>,
}

impl HttpMatch {
    /// True when the match allows every method (`*` listed, or no methods given).
    pub fn any_method(&self) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == METHOD_ANY)
    }

    /// The header conditions flattened to (name, regex) pairs, in order.
    pub fn header_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// RFC 9110 token characters, the only ones allowed in a header name.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Validate for HTTPRouteGroupSpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = Errors::default();
        for (i, m) in self.matches.iter().enumerate() {
            let path = format!("spec.matches[{i}]");
            errs.non_empty(format!("{path}.name"), &m.name);
            if self.matches[..i].iter().any(|other| other.name == m.name) {
                errs.add(
                    format!("{path}.name"),
                    format!("duplicate match name {:?}", m.name),
                );
            }
            if let Some(re) = &m.path_regex {
                errs.regex(format!("{path}.pathRegex"), re);
            }
            for (j, method) in m.methods.iter().enumerate() {
                if method != METHOD_ANY && !HTTP_METHODS.contains(&method.as_str()) {
                    errs.add(
                        format!("{path}.methods[{j}]"),
                        format!(
                            "must be \"*\" or one of {} (got {method:?})",
                            HTTP_METHODS.join(", ")
                        ),
                    );
                }
            }
            for (j, header) in m.headers.iter().enumerate() {
                if header.is_empty() {
                    errs.add(format!("{path}.headers[{j}]"), "must name a header");
                }
                for (name, value) in header {
                    let field = format!("{path}.headers[{j}][{name}]");
                    if !is_header_name(name) {
                        errs.add(field.clone(), "is not a valid HTTP header name");
                    }
                    errs.regex(field, value);
                }
            }
        }
        errs.finish()
    }
}

impl Validate for HTTPRouteGroup {
    fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}

/// TCP traffic to a set of ports.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "specs.smi-spec.io",
    version = "v1alpha4",
    kind = "TCPRoute",
    plural = "tcproutes",
    shortname = "tr",
    namespaced,
    derive = "PartialEq",
    doc = "SMI TCPRoute: TCP traffic to a set of ports."
)]
#[serde(rename_all = "camelCase")]
pub struct TCPRouteSpec {
    /// Match conditions of this route.
    pub matches: TcpMatch,
}

/// The ports a TCPRoute matches; an empty list matches every port.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpMatch {
    /// Optional name of the match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port numbers to match TCP traffic.
    #[serde(default)]
    #[schemars(extend("items" = {"type": "integer", "minimum": 1, "maximum": 65535}))]
    pub ports: Vec<u16>,
}

impl Validate for TCPRouteSpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = Errors::default();
        for (i, p) in self.matches.ports.iter().enumerate() {
            errs.port(format!("spec.matches.ports[{i}]"), i64::from(*p));
        }
        errs.finish()
    }
}

impl Validate for TCPRoute {
    fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}
