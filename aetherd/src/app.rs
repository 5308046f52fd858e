//! The app port (:8081): serves the HTTP routes of the slices this node runs.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What the app server needs to start in dev mode.
pub struct AppConfig {
    pub listen: SocketAddr,
    pub node_id: String,
    pub repo: PathBuf,
    /// Artifacts `group:artifact:version` to load and start at once.
    pub slices: Vec<String>,
}

pub struct AppServer {}

impl AppServer {
    pub fn start(_config: AppConfig) -> Result<AppServer, String> {
        Err("the app server is not available yet".into())
    }

    pub fn stop(self) {}
}
