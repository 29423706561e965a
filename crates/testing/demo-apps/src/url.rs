//! The `http://host[:port][/path]` URLs the HTTP client takes (plain HTTP only: in the mesh, TLS is
//! Envoy's job).

use std::fmt;
use std::str::FromStr;

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (80 when not given).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// The `Host` header value: host plus port unless it is 80.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// This URL as a base with `path` (starting with `/`) appended to its path; a query is dropped.
    /// `http://h:1` + `/books-bought` → `http://h:1/books-bought`; `http://h/shop/` → `/shop/books-bought`.
    pub fn join(&self, path: &str) -> HttpUrl {
        let base = self
            .path
            .split('?')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/');
        HttpUrl {
            path: format!("{base}{path}"),
            ..self.clone()
        }
    }
}

impl FromStr for HttpUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("{s:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| format!("{s:?}: unclosed '['"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.contains('@') {
            return Err(format!("{s:?}: missing or unsupported host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{s:?}: bad port {p:?}"))?,
            None => 80,
        };
        Ok(HttpUrl {
            host: host.to_owned(),
            port,
            path,
        })
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "http://{host}:{}{}", self.port, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> HttpUrl {
        s.parse().unwrap()
    }

    #[test]
    fn parses_host_port_path() {
        assert_eq!(
            url("http://bookstore.bookstore:14001/books-bought"),
            HttpUrl {
                host: "bookstore.bookstore".into(),
                port: 14001,
                path: "/books-bought".into()
            }
        );
        assert_eq!(url("http://10.0.0.1").path, "/");
        assert_eq!(url("http://10.0.0.1").port, 80);
        assert_eq!(url("http://h?x=1").path, "/?x=1");
        assert_eq!(url("http://[::1]:8080/a").host, "::1");
        assert_eq!(url("http://[::1]:8080/a").authority(), "[::1]:8080");
        assert_eq!(url("http://h:81/").authority(), "h:81");
        assert_eq!(url("http://h/").authority(), "h");
    }

    #[test]
    fn joins_paths() {
        assert_eq!(url("http://h:1").join("/books-bought").path, "/books-bought");
        assert_eq!(url("http://h:1/").join("/a").to_string(), "http://h:1/a");
        assert_eq!(url("http://h/shop/?x=1").join("/a").path, "/shop/a");
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        for bad in [
            "https://h/",
            "h:80",
            "http://",
            "http://:80/",
            "http://h:0/",
            "http://h:x/",
            "http://u@h/",
            "http://[::1/",
        ] {
            assert!(bad.parse::<HttpUrl>().is_err(), "{bad}");
        }
    }
}
