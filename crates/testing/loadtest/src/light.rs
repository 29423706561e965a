//! The simulated proxies' view of ADS responses: only the fields they use, with each resource's
//! encoded message kept as a slice of the received buffer (`bytes`), not copied out. Decoding the full
//! generated types cost the driver an allocation and a copy per resource — at 2000 proxies × 2000
//! resources most of the driver's CPU, which shares the machine's two cores with the controller.
//! Fields not declared here are skipped by prost, so the wire format is the generated one.

use bytes::Bytes;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DiscoveryResponse {
    #[prost(string, tag = "1")]
    pub version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<Any>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(message, optional, tag = "2")]
    pub resource: Option<Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaDiscoveryResponse {
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<Resource>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, repeated, tag = "6")]
    pub removed_resources: Vec<String>,
    #[prost(string, tag = "5")]
    pub nonce: String,
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3 as full;
    use envoy_types::pb::google::protobuf::Any as FullAny;
    use prost::Message;

    use super::*;

    /// The light types read what the generated ones write.
    #[test]
    fn decodes_generated_encodings() {
        let any = FullAny {
            type_url: "t".into(),
            value: vec![1, 2, 3],
        };
        let sotw = full::DiscoveryResponse {
            version_info: "v".into(),
            resources: vec![any.clone()],
            type_url: "u".into(),
            nonce: "n".into(),
            ..Default::default()
        };
        let got = DiscoveryResponse::decode(sotw.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            (
                got.version_info.as_str(),
                got.type_url.as_str(),
                got.nonce.as_str()
            ),
            ("v", "u", "n")
        );
        assert_eq!(got.resources[0].value.as_ref(), &[1, 2, 3]);
        let delta = full::DeltaDiscoveryResponse {
            resources: vec![full::Resource {
                name: "a".into(),
                version: "1".into(),
                resource: Some(any),
                ..Default::default()
            }],
            type_url: "u".into(),
            removed_resources: vec!["b".into()],
            nonce: "n".into(),
            ..Default::default()
        };
        let got = DeltaDiscoveryResponse::decode(delta.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            (got.resources[0].name.as_str(), got.resources[0].version.as_str()),
            ("a", "1")
        );
        assert_eq!(
            got.resources[0].resource.as_ref().unwrap().value.as_ref(),
            &[1, 2, 3]
        );
        assert_eq!(got.removed_resources, vec!["b".to_string()]);
    }
}
