//! The kubelet's prober, played from a pod without a sidecar or interception rules (the kubelet sits on
//! the node network): it sends exactly what a container's probe spec says — `httpGet` scheme, port,
//! path and headers, or a `tcpSocket` connect — to the pod's IP, and judges the answer as the kubelet
//! does (HTTP 200–399 passes; for HTTPS it does not verify the certificate). gRPC and exec probes are
//! not played.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use osm_harness::Pod;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// How long one probe may take (the kubelet's `timeoutSeconds`, generous for a loaded test machine).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One probe of `container`'s `probe` at `pod_ip`, sent from `from`: `Ok(status)` when it passes,
/// `Err(why)` when it fails.
pub fn probe(from: &Pod, pod_ip: IpAddr, container: &Container, probe: &Probe) -> Result<u16> {
    if let Some(tcp) = &probe.tcp_socket {
        let addr = SocketAddr::new(pod_ip, port(&tcp.port, container)?);
        from.in_netns(|| TcpStream::connect_timeout(&addr, PROBE_TIMEOUT))?
            .with_context(|| format!("tcpSocket {addr}"))?;
        return Ok(0);
    }
    let Some(get) = &probe.http_get else {
        bail!("only httpGet and tcpSocket probes are played");
    };
    let addr = SocketAddr::new(pod_ip, port(&get.port, container)?);
    let path = get.path.clone().unwrap_or_else(|| "/".into());
    let https = get.scheme.as_deref() == Some("HTTPS");
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.20\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for h in get.http_headers.iter().flatten() {
        request.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    request.push_str("\r\n");
    let what = format!("{} {addr}{path}", if https { "https" } else { "http" });
    let tcp = from
        .in_netns(|| TcpStream::connect_timeout(&addr, PROBE_TIMEOUT))?
        .with_context(|| format!("{what}: connect"))?;
    tcp.set_read_timeout(Some(PROBE_TIMEOUT))?;
    tcp.set_write_timeout(Some(PROBE_TIMEOUT))?;
    let raw = if https {
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification))
                .with_no_client_auth();
        let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::IpAddress(pod_ip.into()))?;
        exchange(rustls::StreamOwned::new(conn, tcp), &request)
    } else {
        exchange(tcp, &request)
    }
    .with_context(|| what.clone())?;
    let status: u16 = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{what}: no status line in {raw:?}"))?;
    if !(200..400).contains(&status) {
        bail!("{what}: status {status}");
    }
    Ok(status)
}

/// Probes until `pass(result)` holds or `timeout` passes; returns the last result's description.
pub fn wait_for(
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<u16>,
    pass: impl Fn(&Result<u16>) -> bool,
) -> std::result::Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let result = attempt();
        if pass(&result) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{result:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn port(port: &IntOrString, container: &Container) -> Result<u16> {
    let named = match port {
        IntOrString::Int(n) => return Ok(u16::try_from(*n)?),
        IntOrString::String(s) => s,
    };
    if let Ok(n) = named.parse() {
        return Ok(n);
    }
    container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(named.as_str()))
        .map(|p| u16::try_from(p.container_port))
        .with_context(|| format!("container {} has no port {named}", container.name))?
        .map_err(Into::into)
}

/// Sends `request`, reads until the peer closes (an unclean TLS close after data ends it too).
fn exchange(mut stream: impl Read + Write, request: &str) -> std::io::Result<String> {
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// The kubelet does not verify a probed app's certificate (`InsecureSkipVerify`), so self-signed
/// app certificates pass.
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The interception rules an injected `osm-init` container's arguments ask for (the flags the injector
/// writes: `--<list>=a,b`), as the Kubernetes kubelet play runs them.
pub fn init_config_from_args(args: &[String]) -> Result<osm_init::InitConfig> {
    let mut cfg = osm_init::InitConfig::default();
    for arg in args {
        let (flag, value) = arg
            .split_once('=')
            .with_context(|| format!("osm-init argument {arg:?} is not --flag=value"))?;
        match flag {
            "--inbound-port-exclusion-list" => {
                cfg.inbound_port_exclusions = osm_init::parse_list(value, osm_init::parse_port)?;
            }
            "--outbound-port-exclusion-list" => {
                cfg.outbound_port_exclusions = osm_init::parse_list(value, osm_init::parse_port)?;
            }
            "--outbound-ip-range-exclusion-list" => {
                cfg.outbound_ip_range_exclusions = osm_init::parse_list(value, |s| s.parse())?;
            }
            "--outbound-ip-range-inclusion-list" => {
                cfg.outbound_ip_range_inclusions = osm_init::parse_list(value, |s| s.parse())?;
            }
            "--network-interface-exclusion-list" => {
                cfg.network_interface_exclusions = osm_init::parse_list(value, |s| s.parse())?;
            }
            other => bail!("unknown osm-init flag {other}"),
        }
    }
    Ok(cfg)
}
