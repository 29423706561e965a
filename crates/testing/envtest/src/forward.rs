//! A TCP forwarder from 127.0.0.1 on the host into a network namespace: how tests on the host reach an
//! apiserver that runs inside a test's own namespace (where the webhooks and sidecars it talks to
//! live). Plain threads, so it works under any (or no) async runtime.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sched::{CloneFlags, setns};

/// Listens on `127.0.0.1:<port>` and copies each connection to `target` inside `netns`; stops on drop.
pub(crate) struct Forwarder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    pub(crate) fn start(netns: &str, target: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let ns_path = Path::new("/run/netns").join(netns);
        File::open(&ns_path)?; // fail now, not at the first connection
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name(format!("envtest-fwd-{}", addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(inbound) = conn else { continue };
                    let ns_path = ns_path.clone();
                    std::thread::spawn(move || {
                        if let Ok(outbound) = connect_in(&ns_path, target) {
                            splice(inbound, outbound);
                        }
                    });
                }
            })?;
        Ok(Self { addr, stop })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Connects from a short-lived thread that entered `ns_path`; the socket stays in that namespace.
fn connect_in(ns_path: &Path, target: SocketAddr) -> io::Result<TcpStream> {
    let handle = File::open(ns_path)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&handle, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            TcpStream::connect(target)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("connect thread panicked")))
    })
}

/// Copies both directions until either side closes.
fn splice(a: TcpStream, b: TcpStream) {
    let (Ok(mut a2), Ok(mut b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let (mut a, mut b) = (a, b);
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut b, &mut a);
    let _ = a.shutdown(Shutdown::Write);
    let _ = up.join();
}
