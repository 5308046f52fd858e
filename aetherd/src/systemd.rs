//! systemd integration without a library: `sd_notify` datagrams to `$NOTIFY_SOCKET`.
//!
//! `READY=1` once the node is in a quorum and caught up (a single-node cluster is ready at once), watchdog
//! pings from the event loop's tick when the unit sets `WatchdogSec=`, and `STOPPING=1` when a signal
//! starts the shutdown. Without `$NOTIFY_SOCKET` (not under systemd) every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
    watchdog_every: Option<Duration>,
    last_ping: Instant,
    ready_sent: bool,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| {
            let socket = UnixDatagram::unbound().ok()?;
            Some((socket, path))
        });
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .map(|usec| Duration::from_micros(usec / 2));
        Notifier { socket, watchdog_every, last_ping: Instant::now(), ready_sent: false }
    }

    fn send(&self, message: &str) {
        let Some((socket, path)) = &self.socket else { return };
        // An abstract socket is named with a leading '@' in the variable.
        let sent = match path.strip_prefix('@') {
            Some(name) => send_abstract(socket, name, message),
            None => socket.send_to(message.as_bytes(), path).map(drop),
        };
        if let Err(e) = sent {
            log::debug!("sd_notify {message}: {e}");
        }
    }

    /// Tells systemd the node is serving (once).
    pub fn ready(&mut self) {
        if !self.ready_sent {
            self.ready_sent = true;
            self.send("READY=1\nSTATUS=in a quorum and caught up");
        }
    }

    /// Called from the event loop's tick: a ping proves the loop is alive.
    pub fn tick(&mut self) {
        if let Some(every) = self.watchdog_every {
            if self.last_ping.elapsed() >= every {
                self.last_ping = Instant::now();
                self.send("WATCHDOG=1");
            }
        }
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &str, message: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(message.as_bytes(), &addr).map(drop)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_socket: &UnixDatagram, _name: &str, _message: &str) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "abstract sockets are Linux-only"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_sent_once_to_the_notify_socket() {
        let path = std::env::temp_dir().join(format!("aether-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut notifier = Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), path.display().to_string())),
            watchdog_every: Some(Duration::ZERO),
            last_ping: Instant::now(),
            ready_sent: false,
        };
        notifier.ready();
        notifier.ready();
        notifier.tick();
        let mut buf = [0u8; 128];
        let n = listener.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..n]).unwrap().starts_with("READY=1"));
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        let _ = std::fs::remove_file(&path);
    }
}
