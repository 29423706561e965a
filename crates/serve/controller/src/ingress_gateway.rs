//! The ingress gateway certificate (MeshConfig `spec.certificate.ingressGateway`), kept current as
//! upstream's `pkg/ingress/gateway.go` does: issued from the mesh CA for the spec's names
//! ([`CertificateAuthority::issue_ingress_gateway_cert`]) and written to an [`IngressGatewayCertStore`]
//! (on Kubernetes the Secret the spec names, in local mode a directory).
//!
//! - spec set: issued and stored; issued again when the spec changes (names, validity or Secret: a
//!   Secret at another place is deleted once the new one is written), when the mesh root changes, and
//!   before it expires — at [`osm_ca::IssuedCert::renew_at`], two thirds into its lifetime, as service
//!   certificates are, so the new one is in place for the last third;
//! - spec removed: the stored certificate is deleted;
//! - a failed issuance, write or deletion is logged and retried 5 s later.
//!
//! [`IngressGatewayCertKeeper::reconcile`] does one step, with the time passed in;
//! [`IngressGatewayCertKeeper::run`] loops it on the control plane's MeshConfig
//! ([`crate::ControlPlane::ingress_gateway_spec`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use osm_api::config::{IngressGatewayCertSpec, SecretReference};
use osm_ca::rotation::RotationQueue;
use osm_ca::{CertificateAuthority, IngressGatewayCertStore, TlsBundle};
use tokio::sync::watch;

/// How long a failed step waits before it is tried again.
pub const RETRY: Duration = Duration::from_secs(5);
/// The longest the loop sleeps (it also re-checks the clock, as certificate rotation does).
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// What is due when.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Job {
    /// Issue and store the wanted certificate (renewal, or retry after a failure).
    Issue,
    /// Delete what is stored at this (no longer wanted) place (retry after a failure).
    Remove(SecretReference),
}

/// What the store holds, as far as this keeper knows.
#[derive(Debug)]
struct Stored {
    spec: IngressGatewayCertSpec,
    /// The root the certificate chains to.
    root_pem: String,
    serial_hex: String,
    not_after: SystemTime,
}

/// Keeps the ingress gateway certificate in its store current with the MeshConfig and the CA.
pub struct IngressGatewayCertKeeper {
    store: Arc<dyn IngressGatewayCertStore>,
    stored: Option<Stored>,
    /// The spec whose last issuance or write failed: tried again when `Job::Issue` comes due, or at
    /// once if the spec changes.
    failed: Option<IngressGatewayCertSpec>,
    queue: RotationQueue<Job>,
}

impl std::fmt::Debug for IngressGatewayCertKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressGatewayCertKeeper")
            .field("stored", &self.stored)
            .field("failed", &self.failed)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl IngressGatewayCertKeeper {
    /// A keeper writing to `store`, which it assumes holds nothing of its own yet.
    pub fn new(store: Arc<dyn IngressGatewayCertStore>) -> Self {
        Self {
            store,
            stored: None,
            failed: None,
            queue: RotationQueue::new(),
        }
    }

    /// Serial (lowercase hex) and expiry of the certificate last stored, if one is.
    pub fn current(&self) -> Option<(&str, SystemTime)> {
        self.stored.as_ref().map(|s| (s.serial_hex.as_str(), s.not_after))
    }

    /// Brings the store in line with `want` (the MeshConfig's spec) and `ca` at time `now`: issues and
    /// writes what is missing, stale or due, deletes what is no longer wanted. Returns when it next has
    /// something to do (a renewal or a retry), if ever.
    pub async fn reconcile(
        &mut self,
        ca: &CertificateAuthority,
        want: Option<&IngressGatewayCertSpec>,
        now: SystemTime,
    ) -> Option<SystemTime> {
        let due = self.queue.due(now);
        let issue_due = due.contains(&Job::Issue);
        let mut removals: Vec<SecretReference> = due
            .into_iter()
            .filter_map(|job| match job {
                Job::Remove(secret) => Some(secret),
                Job::Issue => None,
            })
            .collect();

        // What is stored at a place the spec no longer names is deleted (after the new one is written).
        if let Some(stored) = &self.stored {
            let same_place = want
                .is_some_and(|w| self.store.location(&w.secret) == self.store.location(&stored.spec.secret));
            if !same_place {
                let gone = self.stored.take().expect("checked").spec.secret;
                removals.push(gone);
            }
        }

        match want {
            Some(want) => {
                let reason = match &self.stored {
                    None => Some("issuing"),
                    Some(s) if s.spec != *want => Some("the MeshConfig spec changed: issuing again"),
                    Some(s) if s.root_pem != ca.root_cert_pem() => {
                        Some("the mesh root changed: issuing again")
                    }
                    Some(_) if issue_due => Some("renewing before expiry"),
                    Some(_) => None,
                };
                let waiting = self.failed.as_ref() == Some(want) && !issue_due;
                if let Some(reason) = reason
                    && !waiting
                {
                    self.issue_and_store(ca, want, reason, now).await;
                }
            }
            None => {
                self.failed = None;
                self.queue.remove(&Job::Issue);
            }
        }

        // Never delete the place being written to (a removal retried after the spec came back).
        if let Some(want) = want {
            let wanted = self.store.location(&want.secret);
            removals.retain(|secret| self.store.location(secret) != wanted);
        }
        for secret in removals {
            self.remove(secret, now).await;
        }
        self.queue.next_deadline()
    }

    async fn issue_and_store(
        &mut self,
        ca: &CertificateAuthority,
        spec: &IngressGatewayCertSpec,
        reason: &str,
        now: SystemTime,
    ) {
        let location = self.store.location(&spec.secret);
        let validity: Duration = spec.validity_duration.into();
        let cert = match ca.issue_ingress_gateway_cert(&spec.subject_alt_names, validity) {
            Ok(cert) => cert,
            Err(e) => {
                tracing::error!(
                    error = %e,
                    location,
                    "cannot issue the ingress gateway certificate; retrying in {RETRY:?}"
                );
                return self.retry_issue(spec, now);
            }
        };
        let bundle = TlsBundle::new(ca, &cert);
        if let Err(e) = self.store.store(&spec.secret, &bundle).await {
            tracing::error!(
                error = %e,
                "cannot store the ingress gateway certificate; retrying in {RETRY:?}"
            );
            return self.retry_issue(spec, now);
        }
        tracing::info!(
            location,
            common_name = spec.subject_alt_names.first().map_or("", String::as_str),
            serial = %cert.serial_hex,
            valid_for = ?validity,
            "{reason}: ingress gateway certificate stored"
        );
        self.failed = None;
        self.queue.schedule(Job::Issue, cert.renew_at());
        self.stored = Some(Stored {
            spec: spec.clone(),
            root_pem: ca.root_cert_pem().to_owned(),
            serial_hex: cert.serial_hex,
            not_after: cert.not_after,
        });
    }

    fn retry_issue(&mut self, spec: &IngressGatewayCertSpec, now: SystemTime) {
        self.failed = Some(spec.clone());
        self.queue.schedule(Job::Issue, now + RETRY);
    }

    async fn remove(&mut self, secret: SecretReference, now: SystemTime) {
        let location = self.store.location(&secret);
        match self.store.remove(&secret).await {
            Ok(()) => tracing::info!(location, "ingress gateway certificate deleted"),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "cannot delete the ingress gateway certificate; retrying in {RETRY:?}"
                );
                self.queue.schedule(Job::Remove(secret), now + RETRY);
            }
        }
    }

    /// Keeps the store current with `spec` (the MeshConfig's, from
    /// [`crate::ControlPlane::ingress_gateway_spec`]) until `shutdown` changes or `spec`'s sender is
    /// gone. A MeshConfig change is acted on at once; renewals and retries as they come due.
    pub async fn run(
        mut self,
        ca: Arc<CertificateAuthority>,
        mut spec: watch::Receiver<Option<IngressGatewayCertSpec>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let want = spec.borrow_and_update().clone();
            let next = tokio::select! {
                next = self.reconcile(&ca, want.as_ref(), SystemTime::now()) => next,
                _ = shutdown.changed() => return,
            };
            let wait = next
                .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default())
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = spec.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }
}
