//! Start-up failures are reported with the dying process's own words, and nothing is left behind.

#![forbid(unsafe_code)]

use std::os::unix::fs::PermissionsExt as _;

use osm_envtest::{ApiServer, Assets, Error, require_or_skip};

/// A kube-apiserver that exits at once: `start_with` fails fast with its exit status and log tail
/// (instead of waiting out the readiness deadline), and stops the etcd it had started.
#[tokio::test]
async fn an_apiserver_that_exits_is_reported_with_its_log() {
    let Some(real) = require_or_skip("an_apiserver_that_exits_is_reported_with_its_log") else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let fake = dir.path().join("kube-apiserver");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'Error: unknown flag: --bogus (fake apiserver)' >&2\nexit 3\n",
    )
    .expect("write the fake apiserver");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let assets = Assets {
        dir: dir.path().to_path_buf(),
        kube_apiserver: fake,
        etcd: real.etcd,
    };
    let started = std::time::Instant::now();
    match ApiServer::start_with(&assets).await {
        Err(Error::Exited {
            process,
            status,
            tail,
            ..
        }) => {
            assert_eq!(process, "kube-apiserver");
            assert!(status.contains('3'), "{status}");
            assert!(tail.contains("unknown flag: --bogus"), "{tail}");
        }
        other => panic!("expected Error::Exited, got {other:?}"),
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "failed fast"
    );
}
