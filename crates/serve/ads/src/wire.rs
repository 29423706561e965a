//! Responses encoded for the wire without copying resources: a gRPC message is a short head (frame
//! header and the response's own fields) followed by the resources' shared, pre-encoded bytes. Two
//! thousand proxies sent the same cluster share one allocation; `send_message` hands the chunks to
//! HTTP/2 by reference, copying only small ones together into frames.
//!
//! Protobuf allows a message's fields in any order, so the head carries version, type URL and nonce,
//! and the `resources` entries (field 2 in both `DiscoveryResponse` and `DeltaDiscoveryResponse`)
//! follow it.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource as DeltaResource,
};
use http_body::Frame;
use osm_xds::{RESOURCES_FIELD, Resource, ResourceSet, TypeKind};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use crate::sets::{Framing, set_block};

/// One gRPC message (5-byte prefix and the protobuf `M`) as chunks, most of them shared.
pub struct Encoded<M> {
    chunks: Vec<Bytes>,
    _message: PhantomData<fn() -> M>,
}

impl<M> Encoded<M> {
    fn new(head: &[u8], body: Vec<Bytes>) -> Self {
        let len = head.len() + body.iter().map(Bytes::len).sum::<usize>();
        let mut first = BytesMut::with_capacity(5 + head.len());
        first.put_u8(0); // not compressed
        first.put_u32(u32::try_from(len).expect("an xDS response over 4 GiB"));
        first.put_slice(head);
        let mut chunks = Vec::with_capacity(body.len() + 1);
        chunks.push(first.freeze());
        chunks.extend(body);
        Self {
            chunks,
            _message: PhantomData,
        }
    }

    /// Bytes on the wire, prefix included.
    pub(crate) fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    pub(crate) fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }
}

impl<M: Message + Default> Encoded<M> {
    /// The message as a client decodes it (tests and debugging; copies everything).
    pub fn decode(&self) -> M {
        let mut all = Vec::with_capacity(self.len());
        for c in &self.chunks {
            all.extend_from_slice(c);
        }
        M::decode(&all[5..]).expect("encoded by this module")
    }
}

impl<M> fmt::Debug for Encoded<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Encoded({} bytes in {} chunks)", self.len(), self.chunks.len())
    }
}

/// Sets with at least this many resources of a type are sent as one shared block when a proxy gets
/// all of them; smaller ones resource by resource (their blocks would cost memory for little gain).
const BLOCK_MIN: usize = 32;

/// What a response carries, as the state machines choose it: whole sets (every resource of the type
/// in the set) and single resources.
#[derive(Clone, Copy)]
pub enum Part<'a> {
    Whole(&'a Arc<ResourceSet>),
    One(&'a Arc<Resource>),
}

impl Part<'_> {
    /// Number of resources it stands for.
    pub fn count(&self, kind: TypeKind) -> usize {
        match self {
            Part::Whole(set) => set.of_kind(kind).len(),
            Part::One(_) => 1,
        }
    }

    /// Calls `f` for each resource it stands for.
    pub fn for_each(&self, kind: TypeKind, mut f: impl FnMut(&Arc<Resource>)) {
        match self {
            Part::Whole(set) => set.of_kind(kind).values().for_each(f),
            Part::One(r) => f(r),
        }
    }
}

/// Pushes the chunks that carry `r` as one `resources` entry in the given framing: the shared frame
/// (SotW), or a per-response wrapper followed by the shared `Any` (delta).
fn push_entry(r: &Resource, framing: Framing, out: &mut Vec<Bytes>) {
    match framing {
        Framing::Sotw => out.push(r.sotw_frame().clone()),
        Framing::Delta => {
            out.push(delta_prefix(r));
            out.push(r.any_bytes());
        }
    }
}

/// The chunks of `parts`: a shared block for a large whole set, the resources' own entries otherwise.
fn chunks(parts: &[Part<'_>], kind: TypeKind, framing: Framing) -> Vec<Bytes> {
    let mut body = Vec::new();
    for part in parts {
        match part {
            Part::Whole(set) if set.of_kind(kind).len() >= BLOCK_MIN => {
                body.push(set_block(set, kind, framing, |r, buf| {
                    let mut entry = Vec::with_capacity(2);
                    push_entry(r, framing, &mut entry);
                    entry.iter().for_each(|c| buf.put_slice(c));
                }));
            }
            part => part.for_each(kind, |r| push_entry(r, framing, &mut body)),
        }
    }
    body
}

/// A state-of-the-world response carrying `parts`.
pub fn sotw_response(
    version: &str,
    kind: TypeKind,
    nonce: &str,
    parts: &[Part<'_>],
) -> Encoded<DiscoveryResponse> {
    let head = DiscoveryResponse {
        version_info: version.to_string(),
        type_url: kind.type_url().to_string(),
        nonce: nonce.to_string(),
        ..Default::default()
    };
    Encoded::new(&head.encode_to_vec(), chunks(parts, kind, Framing::Sotw))
}

/// A delta response adding or updating `parts` and removing `removed`.
pub fn delta_response(
    kind: TypeKind,
    nonce: &str,
    parts: &[Part<'_>],
    removed: Vec<String>,
) -> Encoded<DeltaDiscoveryResponse> {
    let head = DeltaDiscoveryResponse {
        type_url: kind.type_url().to_string(),
        nonce: nonce.to_string(),
        removed_resources: removed,
        ..Default::default()
    };
    Encoded::new(&head.encode_to_vec(), chunks(parts, kind, Framing::Delta))
}

/// A `DeltaDiscoveryResponse.resources` entry up to its `Any`: the per-response `Resource` wrapper
/// (name, version) and the key and length of its `resource` field; the `Any` follows.
fn delta_prefix(r: &Resource) -> Bytes {
    let wrapper = DeltaResource {
        name: r.name.clone(),
        version: r.version.clone(),
        ..Default::default()
    }
    .encode_to_vec();
    let any_len = r.any_len();
    // `Resource.resource` is field 2 as well.
    let inner = wrapper.len() + 1 + encoded_len_varint(any_len as u64) + any_len;
    let mut prefix = BytesMut::with_capacity(inner - any_len + 6);
    encode_key(RESOURCES_FIELD, WireType::LengthDelimited, &mut prefix);
    encode_varint(inner as u64, &mut prefix);
    prefix.put_slice(&wrapper);
    encode_key(2, WireType::LengthDelimited, &mut prefix);
    encode_varint(any_len as u64, &mut prefix);
    prefix.freeze()
}

/// A stream's requests, decoded from the gRPC request body. Written here rather than taken from
/// tonic's `Streaming`, whose buffer keeps the size of the largest request for the stream's life
/// (an EDS subscription to a thousand names is ~36 kB; at 2000 streams that was 72 MB). This one is
/// let go whenever it has been drained.
pub(crate) struct Requests<M, B> {
    body: B,
    buf: BytesMut,
    max: usize,
    done: bool,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message + Default, B> Requests<M, B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: fmt::Display,
{
    pub(crate) fn new(body: B, max: usize) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            max,
            done: false,
            _message: PhantomData,
        }
    }

    /// The next request; `None` once the client closed its side. Cancel-safe (for `select!`): what
    /// has been read stays in `self`.
    pub(crate) async fn next(&mut self) -> Option<Result<M, tonic::Status>> {
        use http_body_util::BodyExt;
        loop {
            if let Some(message) = self.take_message() {
                return Some(message);
            }
            if self.done {
                return (!self.buf.is_empty()).then(|| {
                    Err(tonic::Status::internal(
                        "the request stream ended inside a message",
                    ))
                });
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    self.buf.clear();
                    return Some(Err(tonic::Status::unavailable(format!(
                        "reading the request stream: {e}"
                    ))));
                }
                None => self.done = true,
            }
        }
    }

    fn take_message(&mut self) -> Option<Result<M, tonic::Status>> {
        if self.buf.len() < 5 {
            return None;
        }
        let compressed = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if compressed != 0 {
            self.fail();
            return Some(Err(tonic::Status::unimplemented(
                "compressed requests are not supported",
            )));
        }
        if len > self.max {
            self.fail();
            return Some(Err(tonic::Status::resource_exhausted(format!(
                "request of {len} bytes exceeds the limit of {}",
                self.max
            ))));
        }
        if self.buf.len() < 5 + len {
            self.buf.reserve(5 + len - self.buf.len());
            return None;
        }
        let _prefix = self.buf.split_to(5);
        let message = self.buf.split_to(len);
        let decoded =
            M::decode(message).map_err(|e| tonic::Status::internal(format!("undecodable request: {e}")));
        if self.buf.is_empty() {
            // Not `clear()`: the drained view still shares the message's allocation, which the next
            // `reserve` would reclaim and keep. Requests are rare (ACKs), a fresh buffer is cheap.
            self.buf = BytesMut::new();
        }
        Some(decoded)
    }

    /// After a fatal problem: nothing more is read.
    fn fail(&mut self) {
        self.done = true;
        self.buf = BytesMut::new();
    }
}

/// A request stream's HTTP/2 body, handing the flow-control window back as data is taken (the
/// bound on what we buffer is `Requests`' limit, not the window).
pub(crate) struct H2Body(h2::RecvStream);

impl H2Body {
    pub(crate) fn new(recv: h2::RecvStream) -> Self {
        Self(recv)
    }
}

impl http_body::Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let recv = &mut self.get_mut().0;
        match ready!(recv.poll_data(cx)) {
            Some(Ok(data)) => {
                // Fails only for a stream already gone, which the next poll reports.
                let _ = recv.flow_control().release_capacity(data.len());
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => match ready!(recv.poll_trailers(cx)) {
                Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                Ok(None) => Poll::Ready(None),
                Err(e) => Poll::Ready(Some(Err(e))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
}

/// Chunks at least this long go out as they are; shorter ones are copied together up to it, so a
/// response of many small resources is a few HTTP/2 frames rather than one per resource.
const COALESCE: usize = 16 * 1024;

/// A message's chunks as the data frames that carry them: small chunks copied together up to
/// `COALESCE`, large ones passed on by reference.
struct Frames {
    pending: VecDeque<Bytes>,
}

impl Iterator for Frames {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let first = self.pending.pop_front()?;
        if first.len() >= COALESCE {
            return Some(first);
        }
        // How many of the following chunks join it: sized first, so a small response (most pushes
        // are a few hundred bytes) costs an allocation of its own size, not of a whole frame.
        let (mut len, mut joining) = (first.len(), 0);
        for next in &self.pending {
            if next.len() >= COALESCE || len + next.len() > COALESCE {
                break;
            }
            len += next.len();
            joining += 1;
        }
        if joining == 0 {
            return Some(first);
        }
        let mut buf = BytesMut::with_capacity(len);
        buf.put_slice(&first);
        for next in self.pending.drain(..joining) {
            buf.put_slice(&next);
        }
        Some(buf.freeze())
    }
}

fn frames(chunks: Vec<Bytes>) -> Frames {
    Frames {
        pending: chunks.into(),
    }
}

/// Writes one message to the stream. Waits while the stream's send buffer is full (a proxy that
/// does not read holds up only its own stream), as hyper does: h2 grants capacity only while what it
/// buffers for the stream is under its limit, and a frame may then exceed what is left.
pub(crate) async fn send_message(
    tx: &mut h2::SendStream<Bytes>,
    chunks: Vec<Bytes>,
) -> Result<(), h2::Error> {
    for data in frames(chunks) {
        tx.reserve_capacity(1);
        while tx.capacity() == 0 {
            match std::future::poll_fn(|cx| tx.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(h2::Reason::CANCEL.into()),
            }
        }
        tx.send_data(data, false)?;
    }
    Ok(())
}

/// The head of a gRPC response.
pub(crate) fn response_head() -> http::Response<()> {
    let mut head = http::Response::new(());
    head.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    head
}

/// The trailers that end a call: `grpc-status` 0, or `status` (code and message).
pub(crate) fn trailers(status: Option<tonic::Status>) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    match status {
        None => {
            map.insert("grpc-status", http::HeaderValue::from_static("0"));
        }
        Some(status) => {
            if status.add_header(&mut map).is_err() {
                map.insert("grpc-status", http::HeaderValue::from_static("13"));
            }
        }
    }
    map
}

/// Ends a call before it starts, with `status` in the response head ("trailers-only").
pub(crate) fn refuse(mut respond: h2::server::SendResponse<Bytes>, status: tonic::Status) {
    let mut head = response_head();
    head.headers_mut().extend(trailers(Some(status)));
    if let Err(e) = respond.send_response(head, true) {
        tracing::debug!(error = %e, "refusing a stream");
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    use super::*;

    fn cluster(name: &str, padding: usize) -> Arc<Resource> {
        let msg = Cluster {
            name: name.to_string(),
            alt_stat_name: "x".repeat(padding),
            ..Default::default()
        };
        Resource::encode(TypeKind::Cluster, name, &msg)
    }

    /// What prost itself would encode decodes to the same message as our chunked encoding.
    #[test]
    fn sotw_response_decodes_as_prost_encodes_it() {
        let (a, b) = (cluster("a", 10), cluster("b", 300_000));
        let enc = sotw_response("v1", TypeKind::Cluster, "7", &[Part::One(&a), Part::One(&b)]);
        let expected = DiscoveryResponse {
            version_info: "v1".into(),
            resources: vec![a.body(), b.body()],
            type_url: TypeKind::Cluster.type_url().into(),
            nonce: "7".into(),
            ..Default::default()
        };
        assert_eq!(enc.decode(), expected);
        assert_eq!(enc.len(), 5 + expected.encoded_len());
        // The resources' bytes are the shared ones, not copies.
        assert!(enc.chunks[2].as_ptr() == b.sotw_frame().as_ptr());
    }

    #[test]
    fn delta_response_decodes_as_prost_encodes_it() {
        let (a, b) = (cluster("a", 10), cluster("b", 200));
        let enc = delta_response(
            TypeKind::Cluster,
            "3",
            &[Part::One(&a), Part::One(&b)],
            vec!["gone".into()],
        );
        let expected = DeltaDiscoveryResponse {
            resources: vec![wrap(&a), wrap(&b)],
            type_url: TypeKind::Cluster.type_url().into(),
            nonce: "3".into(),
            removed_resources: vec!["gone".into()],
            ..Default::default()
        };
        assert_eq!(enc.decode(), expected);
        assert_eq!(enc.len(), 5 + expected.encoded_len());
    }

    fn big_set(prefix: &str) -> Arc<ResourceSet> {
        let mut set = ResourceSet::default();
        for i in 0..BLOCK_MIN + 3 {
            set.insert(cluster(&format!("{prefix}-{i:03}"), i));
        }
        Arc::new(set)
    }

    fn wrap(r: &Arc<Resource>) -> DeltaResource {
        DeltaResource {
            name: r.name.clone(),
            version: r.version.clone(),
            resource: Some(r.body()),
            ..Default::default()
        }
    }

    /// A large whole set goes out as one block, shared by the next response that carries it, and the
    /// block decodes to the same resources as sending them one by one.
    #[test]
    fn whole_sets_are_one_shared_block() {
        let (set, extra) = (big_set("s"), cluster("z", 1));
        let all: Vec<&Arc<Resource>> = set.of_kind(TypeKind::Cluster).values().chain([&extra]).collect();

        let parts = [Part::Whole(&set), Part::One(&extra)];
        let first = sotw_response("v", TypeKind::Cluster, "1", &parts);
        let second = sotw_response("v", TypeKind::Cluster, "2", &parts);
        assert_eq!(first.chunks.len(), 3, "head, the block, the single resource");
        assert!(first.chunks[1].as_ptr() == second.chunks[1].as_ptr());
        let expected: Vec<_> = all.iter().map(|r| r.body()).collect();
        assert_eq!(first.decode().resources, expected);

        let delta = delta_response(TypeKind::Cluster, "3", &parts, Vec::new());
        let again = delta_response(TypeKind::Cluster, "4", &parts, Vec::new());
        assert!(delta.chunks[1].as_ptr() == again.chunks[1].as_ptr());
        let expected: Vec<_> = all.iter().map(|r| wrap(r)).collect();
        assert_eq!(delta.decode().resources, expected);
    }

    /// An empty wildcard answer (everything removed) is a valid message with no resources.
    #[test]
    fn empty_sotw_response() {
        let enc = sotw_response("v0", TypeKind::Listener, "1", &[]);
        assert!(enc.decode().resources.is_empty());
    }

    /// Small chunks are coalesced up to the frame size, large ones pass through uncopied.
    #[test]
    fn small_chunks_are_coalesced_into_frames() {
        let small = Bytes::from(vec![1u8; 1000]);
        let big = Bytes::from(vec![2u8; 100_000]);
        let mut msg = vec![small.clone(); 40];
        msg.push(big.clone());
        let data: Vec<Bytes> = frames(msg).collect();
        let sizes: Vec<usize> = data.iter().map(Bytes::len).collect();
        assert_eq!(sizes, vec![16_000, 16_000, 8_000, 100_000]);
        assert!(data[3].as_ptr() == big.as_ptr(), "a large chunk is not copied");
    }

    fn request_body(chunks: Vec<Vec<u8>>) -> tonic::body::Body {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c))));
        tonic::body::Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)))
    }

    fn grpc_frame(m: &DiscoveryRequestForTest) -> Vec<u8> {
        let body = m.encode_to_vec();
        let mut v = vec![0];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(&body);
        v
    }

    type DiscoveryRequestForTest = envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

    fn req(names: usize) -> DiscoveryRequestForTest {
        DiscoveryRequestForTest {
            type_url: "t".into(),
            resource_names: (0..names).map(|i| format!("name-{i:05}")).collect(),
            ..Default::default()
        }
    }

    /// Messages split across frames and several in one frame are all read, in order; a large one
    /// does not leave its buffer behind.
    #[tokio::test]
    async fn requests_are_reassembled_and_their_buffer_released() {
        let (big, small) = (req(2000), req(1));
        let (a, b) = (grpc_frame(&big), grpc_frame(&small));
        let mut both = b.clone();
        both.extend_from_slice(&b);
        let (first, second) = a.split_at(7);
        let mut requests = Requests::<DiscoveryRequestForTest, _>::new(
            request_body(vec![first.to_vec(), second.to_vec(), both]),
            1 << 20,
        );
        assert_eq!(requests.next().await.unwrap().unwrap(), big);
        assert_eq!(requests.buf.capacity(), 0, "the drained buffer is let go");
        assert_eq!(requests.next().await.unwrap().unwrap(), small);
        assert_eq!(requests.next().await.unwrap().unwrap(), small);
        assert!(requests.next().await.is_none());
    }

    #[tokio::test]
    async fn oversized_compressed_and_truncated_requests_are_errors() {
        let frame = grpc_frame(&req(100));
        let mut requests = Requests::<DiscoveryRequestForTest, _>::new(request_body(vec![frame.clone()]), 64);
        let err = requests.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(requests.next().await.is_none());

        let mut compressed = frame.clone();
        compressed[0] = 1;
        let mut requests =
            Requests::<DiscoveryRequestForTest, _>::new(request_body(vec![compressed]), 1 << 20);
        assert_eq!(
            requests.next().await.unwrap().unwrap_err().code(),
            tonic::Code::Unimplemented
        );

        let truncated = frame[..frame.len() - 1].to_vec();
        let mut requests =
            Requests::<DiscoveryRequestForTest, _>::new(request_body(vec![truncated]), 1 << 20);
        assert_eq!(
            requests.next().await.unwrap().unwrap_err().code(),
            tonic::Code::Internal
        );
    }

    #[test]
    fn trailers_carry_the_status() {
        assert_eq!(trailers(None)["grpc-status"], "0");
        let t = trailers(Some(tonic::Status::permission_denied("node id does not match")));
        assert_eq!(t["grpc-status"], "7");
        assert_eq!(t["grpc-message"], "node%20id%20does%20not%20match");
    }
}
