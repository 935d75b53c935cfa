//! A TCP proxy that can make what is behind it hang or vanish, to put a
//! real store (PostgreSQL) through the faults a network gives it.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes flow.
    Pass,
    /// Connections are accepted and kept, but no byte moves either way.
    Hang,
    /// Every connection is cut, and new ones are closed at once.
    Down,
}

pub struct FaultProxy {
    pub addr: std::net::SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
}

impl FaultProxy {
    pub async fn start(target: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(watch::channel(Mode::Pass).0);
        let target = target.to_string();
        let modes = mode.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *modes.borrow() == Mode::Down {
                    continue; // dropped: closed at once
                }
                let (target, modes) = (target.clone(), modes.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let mut up = tokio::spawn(pipe(client_read, server_write, modes.subscribe()));
                    let mut down = tokio::spawn(pipe(server_read, client_write, modes.subscribe()));
                    // Either side ending (or the proxy going down) ends both.
                    tokio::select! {
                        _ = &mut up => down.abort(),
                        _ = &mut down => up.abort(),
                    }
                });
            }
        });
        FaultProxy { addr, mode }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// Copies `from` to `to` while the mode lets it; returns when either end
/// closes or the mode becomes `Down`.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        // Hold still while hanging: nothing is read, so nothing is sent.
        loop {
            let now = *mode.borrow_and_update();
            match now {
                Mode::Pass => break,
                Mode::Down => return,
                Mode::Hang => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            read = from.read(&mut buffer) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                // A chunk read just before a hang waits for the hang to end.
                loop {
                    let now = *mode.borrow_and_update();
                    match now {
                        Mode::Pass => break,
                        Mode::Down => return,
                        Mode::Hang => {
                            if mode.changed().await.is_err() {
                                return;
                            }
                        }
                    }
                }
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
