//! The listener the node's loopback test facilities share (`AETHER_SLICE_STATE_DEBUG`, `AETHER_DHT_DEBUG`):
//! an address from an environment variable, loopback only, a thread accepting connections and one thread per
//! connection, at most a fixed number at once.
//!
//! Invariants: nothing listens unless the variable is set; an address that is not a loopback one stops the
//! node at start; a connection past the limit is closed at once.

use log::{info, warn};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The facility's listener when `env` names a loopback address; `Ok(None)` when it is unset. `what` names
/// the facility in errors and the log.
pub fn bind_from_env(env: &str, what: &str) -> Result<Option<(TcpListener, SocketAddr)>, String> {
    let Ok(text) = std::env::var(env) else { return Ok(None) };
    let addr: SocketAddr = text.parse().map_err(|e| format!("{env}={text}: {e}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{env}={text}: the {what} debug port listens on a loopback address only"));
    }
    let listener = TcpListener::bind(addr).map_err(|e| format!("{env}={text}: {e}"))?;
    warn!("{what} debug port on {addr}: a test facility without authentication");
    Ok(Some((listener, addr)))
}

/// Accepts on `listener` in a thread named `thread`, serving each connection with `serve` in a thread of
/// its own, at most `connections_max` at once.
pub fn serve_connections(
    listener: TcpListener,
    thread: &str,
    what: &str,
    connections_max: usize,
    serve: impl Fn(&TcpStream) + Send + Sync + 'static,
) -> Result<(), String> {
    let serve = Arc::new(serve);
    let (connection_thread, what_owned) = (format!("{thread}-conn"), what.to_owned());
    std::thread::Builder::new()
        .name(thread.to_owned())
        .spawn(move || {
            let open = Arc::new(AtomicUsize::new(0));
            for stream in listener.incoming().flatten() {
                if open.fetch_add(1, Ordering::SeqCst) >= connections_max {
                    open.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let (serve, open, counted) = (Arc::clone(&serve), Arc::clone(&open), Arc::clone(&open));
                let spawned = std::thread::Builder::new().name(connection_thread.clone()).spawn(move || {
                    serve(&stream);
                    open.fetch_sub(1, Ordering::SeqCst);
                });
                if let Err(e) = spawned {
                    counted.fetch_sub(1, Ordering::SeqCst);
                    warn!("{what_owned} debug: {e}");
                }
            }
        })
        .map_err(|e| e.to_string())?;
    info!("{what} debug port listening");
    Ok(())
}
