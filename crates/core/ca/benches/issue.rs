//! Issuance cost: one service certificate is a P-256 key generation plus an ECDSA signature.
//!
//! Criterion reports elements/second as the certificates-per-second figure (one thread). The target is
//! ≥ 1000 certificates/s per core, i.e. a mesh of a few thousand proxies re-keys in seconds.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use osm_ca::{CertificateAuthority, ServiceIdentity, TrustDomain, XdsClientIdentity};

fn issue(c: &mut Criterion) {
    let ca = CertificateAuthority::generate(TrustDomain::default(), Duration::from_secs(365 * 86400))
        .expect("root generation");
    let id = ServiceIdentity::new("bookstore", "bookstore-ns");
    let xds = XdsClientIdentity {
        proxy_uuid: "0b9c5c4e-5d2f-4e7a-9a43-6c1e8b3f2a10".into(),
        identity: id.clone(),
        trust_domain: TrustDomain::default(),
    };
    let validity = Duration::from_secs(24 * 3600);

    let mut group = c.benchmark_group("issue");
    group.throughput(Throughput::Elements(1));
    group.bench_function("service_cert", |b| {
        b.iter(|| ca.issue_service_cert(black_box(&id), validity).expect("issue"))
    });
    group.bench_function("xds_client_cert", |b| {
        b.iter(|| {
            ca.issue_xds_client_cert(black_box(&xds), validity)
                .expect("issue")
        })
    });
    group.finish();
}

criterion_group!(benches, issue);
criterion_main!(benches);
