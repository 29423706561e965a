//! An encoded xDS resource, shared by every proxy whose config contains it.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use envoy_types::pb::google::protobuf::Any;
use prost::encoding::{WireType, encode_key, encode_varint};
use prost::{Message, Name};

/// The five xDS types we serve, in the order Envoy should receive them (CDS before EDS, LDS before RDS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TypeKind {
    Cluster,
    Endpoint,
    Listener,
    Route,
    Secret,
}

impl TypeKind {
    pub const ALL: [TypeKind; 5] = [
        TypeKind::Cluster,
        TypeKind::Endpoint,
        TypeKind::Listener,
        TypeKind::Route,
        TypeKind::Secret,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            TypeKind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            TypeKind::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            TypeKind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            TypeKind::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            TypeKind::Secret => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        }
    }

    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// Short name for logs and metrics (`CDS`, `EDS`, ...).
    pub fn short(self) -> &'static str {
        match self {
            TypeKind::Cluster => "CDS",
            TypeKind::Endpoint => "EDS",
            TypeKind::Listener => "LDS",
            TypeKind::Route => "RDS",
            TypeKind::Secret => "SDS",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One `T` per xDS type, indexed by `TypeKind`: what a stream keeps per type, without hashing the
/// kind on every turn (2000 streams × 5 types per change made those lookups a visible share).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerType<T>([T; 5]);

impl<T> PerType<T> {
    /// Each kind with its value, in `TypeKind::ALL` order.
    pub fn iter(&self) -> impl Iterator<Item = (TypeKind, &T)> {
        TypeKind::ALL.into_iter().zip(self.0.iter())
    }
}

impl<T> std::ops::Index<TypeKind> for PerType<T> {
    type Output = T;
    fn index(&self, kind: TypeKind) -> &T {
        &self.0[kind.index()]
    }
}

impl<T> std::ops::IndexMut<TypeKind> for PerType<T> {
    fn index_mut(&mut self, kind: TypeKind) -> &mut T {
        &mut self.0[kind.index()]
    }
}

/// One xDS resource, encoded once. `version` is a hash of the encoded bytes, so equal content always
/// has an equal version and the ADS server never re-sends what a proxy already has.
///
/// The encoding is kept ready for the wire: `frame` is the resource as one entry of a
/// `DiscoveryResponse.resources` (field key, length, then the encoded `Any`). Every proxy's response
/// refers to these same bytes; nothing is copied or re-encoded per proxy.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub kind: TypeKind,
    pub name: String,
    pub version: String,
    frame: Bytes,
    /// Where the encoded `Any` starts in `frame`.
    any_at: usize,
}

/// `DiscoveryResponse.resources` and `DeltaDiscoveryResponse.resources` are both field 2.
pub const RESOURCES_FIELD: u32 = 2;

impl Resource {
    pub fn encode<M: Message + Name>(kind: TypeKind, name: impl Into<String>, msg: &M) -> Arc<Self> {
        Self::from_any(
            kind,
            name,
            Any {
                type_url: M::type_url(),
                value: msg.encode_to_vec(),
            },
        )
    }

    /// A resource from an already encoded message.
    pub fn from_any(kind: TypeKind, name: impl Into<String>, any: Any) -> Arc<Self> {
        let version = format!("{:016x}", hash_bytes(&any.value));
        let any_len = any.encoded_len();
        let mut frame = BytesMut::with_capacity(any_len + 6);
        encode_key(RESOURCES_FIELD, WireType::LengthDelimited, &mut frame);
        encode_varint(any_len as u64, &mut frame);
        let any_at = frame.len();
        any.encode(&mut frame)
            .expect("the buffer was sized for the message");
        Arc::new(Self {
            kind,
            name: name.into(),
            version,
            frame: frame.freeze(),
            any_at,
        })
    }

    /// The resource as one `resources` entry of a state-of-the-world `DiscoveryResponse`.
    pub fn sotw_frame(&self) -> &Bytes {
        &self.frame
    }

    /// The encoded `Any` (shares the resource's bytes).
    pub fn any_bytes(&self) -> Bytes {
        self.frame.slice(self.any_at..)
    }

    /// Length of the encoded `Any` (type URL and message): what a proxy is sent for this resource.
    pub fn any_len(&self) -> usize {
        self.frame.len() - self.any_at
    }

    /// The resource as an `Any` (a decoded copy: for inspection, not for serving).
    pub fn body(&self) -> Any {
        Any::decode(&self.frame[self.any_at..]).expect("encoded by Resource::encode")
    }
}

/// Wraps a message as `Any` for a `typed_config` field.
pub fn to_any<M: Message + Name>(msg: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: msg.encode_to_vec(),
    }
}

pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    // SipHash with fixed keys: stable across runs, so versions survive a controller restart.
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// A group of resources built together from one intent (all outbound resources of one
/// `OutboundIntent`, say). Proxies share sets by `Arc`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceSet {
    by_kind: [BTreeMap<String, Arc<Resource>>; 5],
}

impl ResourceSet {
    pub fn insert(&mut self, r: Arc<Resource>) {
        self.by_kind[r.kind.index()].insert(r.name.clone(), r);
    }

    pub fn get(&self, kind: TypeKind, name: &str) -> Option<&Arc<Resource>> {
        self.by_kind[kind.index()].get(name)
    }

    pub fn of_kind(&self, kind: TypeKind) -> &BTreeMap<String, Arc<Resource>> {
        &self.by_kind[kind.index()]
    }

    /// Names of `kind` that are in only one of the two sets, or in both with another version.
    pub fn changed_names(&self, newer: &ResourceSet, kind: TypeKind) -> Vec<String> {
        osm_model::diff::changed_keys_by(self.of_kind(kind), newer.of_kind(kind), |a, b| {
            Arc::ptr_eq(a, b) || a.version == b.version
        })
    }
}

/// Everything one proxy is served: a few shared sets. Names are unique across the sets.
#[derive(Clone, Debug, Default)]
pub struct ProxyConfig {
    pub sets: Vec<Arc<ResourceSet>>,
}

impl ProxyConfig {
    pub fn get(&self, kind: TypeKind, name: &str) -> Option<&Arc<Resource>> {
        self.sets.iter().find_map(|s| s.get(kind, name))
    }

    pub fn iter(&self, kind: TypeKind) -> impl Iterator<Item = &Arc<Resource>> {
        self.sets.iter().flat_map(move |s| s.of_kind(kind).values())
    }

    /// True when both configs are made of the very same sets (cheap change detection).
    pub fn same_sets(&self, other: &ProxyConfig) -> bool {
        self.made_of(&other.sets)
    }

    /// True when the config is made of exactly these sets, by identity (what a stream remembers of the
    /// config it last handled).
    pub fn made_of(&self, sets: &[Arc<ResourceSet>]) -> bool {
        self.sets.len() == sets.len() && self.sets.iter().zip(sets).all(|(a, b)| Arc::ptr_eq(a, b))
    }
}
