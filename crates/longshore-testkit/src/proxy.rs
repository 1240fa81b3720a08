//! A small TCP proxy between a client and a broker on 127.0.0.1, for network faults: cut every
//! connection (and refuse new ones), stall (accept, forward nothing), or slow each chunk down.
//!
//! It only ever listens on and connects to loopback addresses, runs until dropped, and ends
//! every task it started when dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Close every connection and refuse new ones (a broker that went away).
    Cut,
    /// Keep connections open and forward nothing (a network that stopped, longer than
    /// heartbeats).
    Stall,
    /// Forward, waiting this long before each chunk (a slow link).
    Slow(Duration),
}

/// A running proxy. Dropping it stops it and closes every connection.
pub struct Proxy {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("mode", &*self.mode.borrow())
            .finish()
    }
}

impl Proxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (which must be a
    /// loopback address: fault tests never send traffic anywhere else).
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        Self::start_on(upstream, 0).await
    }

    /// [`Proxy::start`] on a given loopback port (0: any free one), for a broker that must
    /// advertise the proxy's address before the proxy runs (Kafka).
    pub async fn start_on(upstream: SocketAddr, port: u16) -> std::io::Result<Proxy> {
        if !upstream.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the fault proxy only forwards to loopback addresses",
            ));
        }
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let (tx, _) = watch::channel(Mode::Pass);
        let mode = Arc::new(tx);
        let accept = tokio::spawn(accept_loop(listener, upstream, mode.clone()));
        Ok(Proxy { addr, mode, accept })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what the proxy does, for open connections and new ones alike.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Cutting first ends every connection task; then the accept loop itself.
        self.mode.send_replace(Mode::Cut);
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, mode: Arc<watch::Sender<Mode>>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *mode.borrow() == Mode::Cut {
            drop(client);
            continue;
        }
        let rx = mode.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            // Either direction ending (or a cut) ends both.
            tokio::select! {
                _ = pipe(cr, sw, rx.clone()) => {}
                _ = pipe(sr, cw, rx) => {}
            }
        });
    }
}

/// Copies `from` into `to` chunk by chunk, obeying the mode before each chunk.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == Mode::Cut {
                    return;
                }
                continue;
            }
        };
        // Wait out a stall (the bytes read so far are held, as a stalled network would).
        loop {
            let current = *mode.borrow_and_update();
            match current {
                Mode::Cut => return,
                Mode::Stall => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
                Mode::Slow(delay) => {
                    tokio::time::sleep(delay).await;
                    break;
                }
                Mode::Pass => break,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn passes_cuts_and_stalls() {
        let proxy = Proxy::start(echo_server().await).await.expect("proxy");
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        c.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"ping");

        proxy.set(Mode::Stall);
        c.write_all(b"held").await.expect("write");
        let stalled = tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await;
        assert!(stalled.is_err(), "a stalled proxy forwarded bytes");
        proxy.set(Mode::Pass);
        c.read_exact(&mut buf)
            .await
            .expect("held bytes arrive after the stall");
        assert_eq!(&buf, b"held");

        proxy.set(Mode::Cut);
        let n = c.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "a cut closes open connections");
        let mut again = TcpStream::connect(proxy.addr()).await.expect("tcp accept");
        let n = again.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "a cut proxy closes new connections at once");
    }
}
