//! Certificate rotation under load: with a 1-minute service certificate validity, continuous requests
//! across two rotations of both sidecars' certificates see zero failures.

use std::time::{Duration, Instant};

use osm_api::duration::GoDuration;
use osm_e2e::{BOOKBUYER_HEADER, Mesh, USER_AGENT, require_or_skip};
use osm_xds::bootstrap::AdsApi;

/// The serial number of the `service-cert` Envoy currently holds (from its admin `/certs`).
fn service_cert_serial(mesh: &Mesh, pod: &str) -> Option<String> {
    let certs: serde_json::Value = serde_json::from_str(&mesh.envoy(pod).admin_get("/certs").ok()?).ok()?;
    certs["certificates"]
        .as_array()?
        .iter()
        .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
        .find(|c| {
            c["subject_alt_names"]
                .to_string()
                .contains(&format!("{pod}.{pod}.cluster.local"))
        })
        .and_then(|c| c["serial_number"].as_str().map(str::to_string))
}

#[test]
fn rotation_without_failures() {
    if require_or_skip("rotation").is_none() {
        return;
    }
    let (mesh, _) = Mesh::bookstore("e2r", AdsApi::Delta, true, None, &[], |input, _| {
        input.mesh_config.certificate.service_cert_validity_duration = GoDuration::from_secs(60);
    })
    .expect("mesh starts");

    let stop = mesh.pod("bookbuyer").pod.dir().join("stop-client");
    let bin = osm_harness::demo_app_bin().unwrap();
    let mut client = mesh
        .pod("bookbuyer")
        .pod
        .spawn(
            &[
                bin.to_str().unwrap(),
                "http-client",
                "--url",
                "http://bookwarehouse.bookwarehouse:14001/restock-books",
                "--header",
                BOOKBUYER_HEADER,
                "--header",
                USER_AGENT,
                "--interval-ms",
                "20",
                "--timeout-ms",
                "3000",
                "--until-file",
                stop.to_str().unwrap(),
            ],
            &[],
        )
        .unwrap();

    // Watch both ends' certificates change twice (observable through Envoy's admin /certs).
    let mut serials: Vec<(&str, Vec<String>)> = vec![("bookbuyer", vec![]), ("bookwarehouse", vec![])];
    let deadline = Instant::now() + Duration::from_secs(180);
    while serials.iter().any(|(_, seen)| seen.len() < 3) {
        assert!(
            Instant::now() < deadline,
            "fewer than two rotations observed in 180 s: {serials:?}"
        );
        for (pod, seen) in serials.iter_mut() {
            if let Some(serial) = service_cert_serial(&mesh, pod).filter(|s| seen.last() != Some(s)) {
                seen.push(serial);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    std::fs::write(&stop, b"").unwrap();
    client.wait_timeout(Duration::from_secs(30)).unwrap();
    let out = client.stdout();
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("client summary");
    let s: osm_e2e::ClientSummary = serde_json::from_str(line).unwrap();
    assert!(s.sent > 100, "too little traffic to mean anything: {s:?}");
    assert_eq!(
        (s.ok, s.errors),
        (s.sent, 0),
        "requests failed across rotations {serials:?}: {s:?}"
    );
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}
