//! Scale benchmark on a permissive full mesh of 1000 services × 2 pods (2000 proxies, 1000
//! identities): the model computation, a cold generation of every proxy's config, and a warm
//! recompute + regeneration after one endpoint moved. Peak memory and CPU time are printed by the
//! `mesh_scale` example (`cargo run --release -p osm-xds --example mesh_scale`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use osm_model::compute;
use osm_xds::Generator;

#[path = "support/mesh.rs"]
mod mesh;

const SERVICES: usize = 1000;

fn scale(c: &mut Criterion) {
    let input = mesh::full_mesh(SERVICES);
    let model = compute(&input);
    assert_eq!(model.proxies.len(), 2 * SERVICES);
    let secrets = mesh::secrets_by_identity(&model);
    let ca = mesh::ca_bundle();

    let mut group = c.benchmark_group("mesh_1000_services");
    group
        .sample_size(10)
        // Each iteration takes tens of milliseconds: equal-sized samples keep the run short.
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    group.bench_function("compute", |b| b.iter(|| compute(black_box(&input))));

    group.bench_function("generate_cold", |b| {
        b.iter(|| {
            let mut g = Generator::new(mesh::TRUST_DOMAIN, &ca);
            mesh::generate_all(&mut g, black_box(&model), &secrets)
        })
    });

    // Alternate between two inputs that differ in one pod's address: every iteration is a recompute
    // after one endpoint change, with the memo warm from the previous one.
    let inputs = [mesh::with_moved_pod(&input, SERVICES / 2), input.clone()];
    let mut g = Generator::new(mesh::TRUST_DOMAIN, &ca);
    mesh::generate_all(&mut g, &model, &secrets);
    let mut turn = 0;
    group.bench_function("recompute_one_endpoint_changed", |b| {
        b.iter(|| {
            turn ^= 1;
            let model = compute(&inputs[turn ^ 1]);
            mesh::generate_all(&mut g, &model, &secrets)
        })
    });
    group.finish();
}

criterion_group!(benches, scale);
criterion_main!(benches);
