//! The TCP echo server and one TCP client attempt.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::summary::Outcome;

/// Echoes every byte back on every connection, forever.
pub async fn serve_echo(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let mut stream = crate::http::accept(&listener).await;
        tokio::spawn(async move {
            let (mut reader, mut writer) = stream.split();
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
        });
    }
}

/// Connects to `addr` (`host:port`, resolved with the system resolver), sends `message` and expects
/// the same bytes back, all within `timeout`.
pub async fn attempt(addr: &str, message: &[u8], timeout: Duration) -> Outcome {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .write_all(message)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut echo = vec![0; message.len()];
        stream
            .read_exact(&mut echo)
            .await
            .map_err(|e| format!("read echo: {e}"))?;
        if echo == message {
            Ok(())
        } else {
            Err(format!("echo mismatch: {:?}", String::from_utf8_lossy(&echo)))
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(err)) => Outcome::Error(err),
        Err(_) => Outcome::Error(format!("timeout after {timeout:?}")),
    }
}
