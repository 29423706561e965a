//! Kubernetes name rules (RFC 1123 / RFC 1035 labels, subdomains, IANA service names), with the
//! apiserver's wording, so a name refused here would be refused by a cluster too.

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn label_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && b.iter().all(|&c| is_alnum(c) || c == b'-') && is_alnum(b[0]) && is_alnum(b[b.len() - 1])
}

/// A lowercase RFC 1123 label (namespace names, label-like names): `Err` says why not.
pub(crate) fn dns1123_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!(
            "Invalid value: {s:?}: must be no more than 63 characters"
        ));
    }
    if !label_chars_ok(s) {
        return Err(format!(
            "Invalid value: {s:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric \
             characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', \
             or '123-abc')"
        ));
    }
    Ok(())
}

/// A lowercase RFC 1123 subdomain (pod, deployment, service account and custom resource names).
pub(crate) fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err(format!(
            "Invalid value: {s:?}: must be no more than 253 characters"
        ));
    }
    let ok = !s.is_empty()
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.iter().all(|&c| is_alnum(c) || c == b'-')
                && is_alnum(b[0])
                && is_alnum(b[b.len() - 1])
        });
    if !ok {
        return Err(format!(
            "Invalid value: {s:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
             characters, '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com')"
        ));
    }
    Ok(())
}

/// An RFC 1035 label (Service names): like an RFC 1123 label but starting with a letter.
pub(crate) fn dns1035_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!(
            "Invalid value: {s:?}: must be no more than 63 characters"
        ));
    }
    if !label_chars_ok(s) || !s.as_bytes()[0].is_ascii_lowercase() {
        return Err(format!(
            "Invalid value: {s:?}: a DNS-1035 label must consist of lower case alphanumeric characters or \
             '-', start with an alphabetic character, and end with an alphanumeric character (e.g. \
             'my-name', or 'abc-123')"
        ));
    }
    Ok(())
}

/// An IANA service name (named ports): at most 15 characters, lowercase alphanumerics and '-', at
/// least one letter, no leading, trailing or doubled '-'.
pub(crate) fn iana_svc_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = (1..=15).contains(&b.len())
        && b.iter().all(|&c| is_alnum(c) || c == b'-')
        && b.iter().any(u8::is_ascii_lowercase)
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--");
    if !ok {
        return Err(format!(
            "Invalid value: {s:?}: must be no more than 15 characters, contain only lower case \
             alphanumeric characters or '-', contain at least one letter, and not start, end or have \
             adjacent '-' (an IANA_SVC_NAME)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        assert!(dns1123_label("bookstore").is_ok());
        assert!(dns1123_label("123-abc").is_ok());
        assert!(dns1123_label("Bookstore").is_err());
        assert!(dns1123_label("-a").is_err());
        assert!(dns1123_label("").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_subdomain("bookstore-v1.x").is_ok());
        assert!(dns1123_subdomain("a..b").is_err());
        assert!(dns1123_subdomain("a_b").is_err());
        assert!(dns1035_label("bookstore").is_ok());
        assert!(dns1035_label("1bookstore").is_err());
    }

    #[test]
    fn service_names() {
        assert!(iana_svc_name("http").is_ok());
        assert!(iana_svc_name("http-alt2").is_ok());
        assert!(iana_svc_name("8080").is_err());
        assert!(iana_svc_name("a--b").is_err());
        assert!(iana_svc_name("-ab").is_err());
        assert!(iana_svc_name("abcdefghijklmnop").is_err());
    }
}
