//! Service certificates per identity: issued on first use, shared by every proxy of that identity
//! (as the SDS `service-cert` set), and rotated at two thirds of their lifetime.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use osm_ca::rotation::RotationQueue;
use osm_ca::{CertificateAuthority, IssuedCert};
use osm_model::ServiceIdentity;
use osm_xds::ResourceSet;

use crate::ControllerError;

pub struct IdentityCerts {
    ca: Arc<CertificateAuthority>,
    validity: Duration,
    issued: HashMap<ServiceIdentity, (IssuedCert, Arc<ResourceSet>)>,
    rotation: RotationQueue<ServiceIdentity>,
}

impl IdentityCerts {
    pub fn new(ca: Arc<CertificateAuthority>) -> Self {
        Self {
            ca,
            validity: Duration::from_secs(24 * 3600),
            issued: HashMap::new(),
            rotation: RotationQueue::new(),
        }
    }

    /// A new validity applies from each certificate's next rotation.
    pub fn set_validity(&mut self, validity: Duration) {
        self.validity = validity;
    }

    pub fn secrets_for(&mut self, id: &ServiceIdentity) -> Result<Arc<ResourceSet>, ControllerError> {
        if let Some((_, set)) = self.issued.get(id) {
            return Ok(set.clone());
        }
        self.issue(id)
    }

    fn issue(&mut self, id: &ServiceIdentity) -> Result<Arc<ResourceSet>, ControllerError> {
        let cert = self.issuer().issue(id)?;
        Ok(self.install(id, cert))
    }

    fn install(&mut self, id: &ServiceIdentity, cert: IssuedCert) -> Arc<ResourceSet> {
        let set = osm_xds::identity_secrets(&cert.cert_pem, cert.private_key.expose_pem());
        self.rotation.schedule(id.clone(), cert.renew_at());
        self.issued.insert(id.clone(), (cert, set.clone()));
        set
    }

    /// What issuing needs, to sign without holding the control plane's lock.
    pub fn issuer(&self) -> Issuer {
        Issuer {
            ca: self.ca.clone(),
            validity: self.validity,
        }
    }

    /// Takes the identities due for rotation at `now` off the queue (step 1 of a rotation).
    pub fn take_due(&mut self, now: SystemTime) -> Vec<ServiceIdentity> {
        let mut due = self.rotation.due(now);
        due.retain(|id| self.issued.contains_key(id));
        due
    }

    /// Installs certificates issued for [`Self::take_due`]'s identities (step 3); a failed one is retried
    /// 5 s after `now`, one whose identity left the mesh meanwhile is dropped. Returns how many changed.
    pub fn install_rotated(
        &mut self,
        now: SystemTime,
        issued: Vec<(ServiceIdentity, Result<IssuedCert, ControllerError>)>,
    ) -> usize {
        let mut rotated = 0;
        for (id, cert) in issued {
            if !self.issued.contains_key(&id) {
                continue;
            }
            match cert {
                Ok(cert) => {
                    self.install(&id, cert);
                    rotated += 1;
                }
                Err(e) => {
                    tracing::error!(identity = %id, error = %e, "rotation failed; retrying in 5s");
                    self.rotation.schedule(id, now + Duration::from_secs(5));
                }
            }
        }
        rotated
    }

    pub fn next_deadline(&self) -> Option<SystemTime> {
        self.rotation.next_deadline()
    }

    /// Forgets identities no proxy has any more.
    pub fn retain<'a>(&mut self, live: impl Iterator<Item = &'a ServiceIdentity>) {
        let live: HashSet<&ServiceIdentity> = live.collect();
        let gone: Vec<ServiceIdentity> = self
            .issued
            .keys()
            .filter(|k| !live.contains(k))
            .cloned()
            .collect();
        for id in gone {
            self.issued.remove(&id);
            self.rotation.remove(&id);
        }
    }
}

/// Signs service certificates (step 2 of a rotation, outside the lock).
pub struct Issuer {
    ca: Arc<CertificateAuthority>,
    validity: Duration,
}

impl Issuer {
    pub fn issue(&self, id: &ServiceIdentity) -> Result<IssuedCert, ControllerError> {
        let ca_id = osm_ca::ServiceIdentity::new(&id.service_account, &id.namespace);
        self.ca
            .issue_service_cert(&ca_id, self.validity)
            .map_err(|source| ControllerError::Certificate {
                what: format!("identity {id}"),
                source,
            })
    }
}
