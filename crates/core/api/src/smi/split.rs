//! `split.smi-spec.io/v1alpha2` `TrafficSplit`: weighted split of traffic addressed to an apex
//! Service across backend Services.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{Errors, Validate, ValidationErrors};

/// Splits traffic sent to `service` (the apex, a Service name or FQDN) across `backends`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "split.smi-spec.io",
    version = "v1alpha2",
    kind = "TrafficSplit",
    plural = "trafficsplits",
    shortname = "ts",
    namespaced,
    derive = "PartialEq",
    printcolumn(
        name = "Service",
        type_ = "string",
        json_path = ".spec.service",
        description = "The apex service of this split."
    ),
    doc = "SMI TrafficSplit: weighted split of traffic for an apex Service across backend Services."
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitSpec {
    /// The apex service of this split.
    pub service: String,
    /// The backend services of this split.
    pub backends: Vec<TrafficSplitBackend>,
}

/// One backend Service and its relative weight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitBackend {
    /// Name of the Kubernetes service.
    pub service: String,
    /// Traffic weight value of this backend, relative to the other backends.
    pub weight: i64,
}

impl Validate for TrafficSplitSpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = Errors::default();
        errs.non_empty("spec.service", &self.service);
        if self.backends.is_empty() {
            errs.add("spec.backends", "must list at least one backend");
        }
        for (i, b) in self.backends.iter().enumerate() {
            errs.non_empty(format!("spec.backends[{i}].service"), &b.service);
            if b.weight < 0 {
                errs.add(format!("spec.backends[{i}].weight"), "must be >= 0");
            }
        }
        errs.finish()
    }
}

impl Validate for TrafficSplit {
    fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}
