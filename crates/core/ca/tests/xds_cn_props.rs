//! Property tests of the xDS client CN: parsing arbitrary (peer-controlled) strings never panics, and
//! every well-formed identity round-trips.

use osm_ca::{ServiceIdentity, TrustDomain, XdsClientIdentity};
use proptest::prelude::*;

const LABEL: &str = "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?";

proptest! {
    /// Arbitrary text, including near-misses built from the real separators, never panics.
    #[test]
    fn parse_never_panics(s in any::<String>(), t in "[a-z.-]{0,12}(\\.sidecar\\.)?[a-z.-]{0,12}(\\.cluster\\.local)?") {
        let td = TrustDomain::default();
        let _ = XdsClientIdentity::parse(&s, &td);
        let _ = XdsClientIdentity::parse(&t, &td);
    }

    /// common_name followed by parse is the identity.
    #[test]
    fn round_trip(uuid in "[0-9a-f-]{1,36}", sa in LABEL, ns in LABEL, td in "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,2}") {
        let id = XdsClientIdentity {
            proxy_uuid: uuid,
            identity: ServiceIdentity::new(sa, ns),
            trust_domain: TrustDomain::new(td).unwrap(),
        };
        let parsed = XdsClientIdentity::parse(&id.common_name(), &id.trust_domain).unwrap();
        prop_assert_eq!(parsed, id);
    }

    /// Whatever parse accepts is rebuilt exactly by common_name (no two spellings of one identity).
    #[test]
    fn accepted_is_canonical(s in "[a-z0-9.-]{0,40}\\.cluster\\.local") {
        let td = TrustDomain::default();
        if let Ok(id) = XdsClientIdentity::parse(&s, &td) {
            prop_assert_eq!(id.common_name(), s);
        }
    }
}
