//! The node's configuration file (TOML) and the `--dev` defaults.
//!
//! Every problem is reported as one line naming the file, the line and the field, and nothing starts with
//! a bad file: unknown keys, missing fields, bad addresses, an unreadable or empty secret, duplicate peers,
//! or a node that is not in its own peer list.

use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The default of `[cluster] drain_on_stop_ms`.
pub const DRAIN_ON_STOP_MS_DEFAULT: u64 = 30_000;
/// The largest `[cluster] drain_on_stop_ms` accepted.
pub const DRAIN_ON_STOP_MS_MAX: u64 = 600_000;

/// A validated node configuration.
#[derive(Clone)]
pub struct NodeConfig {
    pub node_id: String,
    pub data_dir: PathBuf,
    /// The local slice repository (Maven layout); `[node] repository`, default `{data_dir}/repository`.
    pub repository: PathBuf,
    pub cluster_name: String,
    /// The shared cluster secret's bytes; never printed.
    pub secret: Vec<u8>,
    /// Every node of the cluster, this one included, in file order. They seed a new cluster only: once a
    /// node has run, its members come from its data directory (`roster`). With `join`, the others are the
    /// members it asks for the roster.
    pub peers: Vec<(String, SocketAddr)>,
    /// `[cluster] join`: this node joins a running cluster (as a learner, then a voter) instead of forming
    /// a new one with its peers.
    pub join: bool,
    pub listen_management: SocketAddr,
    pub listen_app: SocketAddr,
    pub listen_cluster: SocketAddr,
    /// A peer silent for longer is suspected down (`[cluster] suspicion_timeout_ms`, default 500).
    pub suspicion_timeout: std::time::Duration,
    /// How long a command may wait to be decided, from its stamp, before every replica drops it
    /// (`[cluster] command_ttl_ms`, default 30000; at least twice the 5 s client deadline).
    pub command_ttl_ms: u64,
    /// A node whose lease record stays unchanged this long is dead and its instances are re-placed
    /// (`[cluster] lease_grace_ms`, default 5000, at least twice the suspicion timeout).
    pub lease_grace: std::time::Duration,
    /// On SIGTERM, how long the node waits for the leader to move its instances away before it stops
    /// (`[cluster] drain_on_stop_ms`, default 30000, at most 600000; 0 stops without a drain).
    pub drain_on_stop: std::time::Duration,
    pub cluster_tls: Option<crate::cluster_tls_config::ClusterTlsSettings>,
    /// `[tls]`: TLS on the management and app ports (see `tls_config`).
    pub tls: Option<httpd::TlsFiles>,
    pub management: crate::management_config::ManagementConfig,
    /// `[artifacts]`: which slice libraries this node loads.
    pub artifacts: crate::artifacts_config::ArtifactsConfig,
    /// `[dht]`: how the storage plane replicates.
    pub dht: dht::Config,
    /// `[messaging]`: topic bounds, retention, delivery threads.
    pub messaging: crate::messaging::MessagingConfig,
}

/// Most nodes in one cluster (every node talks to every other; consensus replica ids are a byte).
pub const PEERS_MAX: usize = 64;

/// Default failure-detector suspicion timeout: transport pings arrive every 100 ms.
pub const SUSPICION_TIMEOUT_MS_DEFAULT: u64 = 500;

/// Default lifetime of a consensus command: well past the client deadline, so a command is dropped only
/// long after its client was told "may still apply", and then can no longer apply.
pub const COMMAND_TTL_MS_DEFAULT: u64 = 30_000;

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("node_id", &self.node_id)
            .field("cluster_name", &self.cluster_name)
            .field("peers", &self.peers)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: RawNode,
    cluster: RawCluster,
    listen: RawListen,
    cluster_tls: Option<crate::cluster_tls_config::RawClusterTls>,
    tls: Option<crate::tls_config::RawTls>,
    management: Option<crate::management_config::RawManagement>,
    #[serde(default)]
    artifacts: crate::artifacts_config::RawArtifacts,
    #[serde(default)]
    dht: crate::dht_config::RawDht,
    #[serde(default)]
    messaging: crate::messaging::config::RawMessaging,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: Spanned<String>,
    data_dir: Spanned<String>,
    repository: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Spanned<String>,
    secret_file: Spanned<String>,
    peers: Spanned<Vec<Spanned<String>>>,
    suspicion_timeout_ms: Option<Spanned<u64>>,
    command_ttl_ms: Option<Spanned<u64>>,
    lease_grace_ms: Option<Spanned<u64>>,
    join: Option<bool>,
    drain_on_stop_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    management: Spanned<String>,
    app: Spanned<String>,
    cluster: Spanned<String>,
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<NodeConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    parse(path, &text)
}

/// Validates config text; `path` is used in messages and to resolve a relative `secret_file`.
pub fn parse(path: &Path, text: &str) -> Result<NodeConfig, String> {
    let file = path.display();
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| format!("line {}: ", line_of(text, s.start))).unwrap_or_default();
        format!("{file}: {line}{}", e.message().trim())
    })?;
    let at = |span: std::ops::Range<usize>, field: &str, msg: String| {
        format!("{file}: line {}: {field}: {msg}", line_of(text, span.start))
    };
    let node_id = check_node_id(raw.node.id.get_ref()).map_err(|m| at(raw.node.id.span(), "node.id", m))?;
    let cluster_name =
        check_name(raw.cluster.name.get_ref()).map_err(|m| at(raw.cluster.name.span(), "cluster.name", m))?;
    let mut peers = Vec::new();
    for entry in raw.cluster.peers.get_ref() {
        let peer = parse_peer(entry.get_ref()).map_err(|m| at(entry.span(), "cluster.peers", m))?;
        if peers.iter().any(|(id, addr): &(String, SocketAddr)| *id == peer.0 || *addr == peer.1) {
            return Err(at(entry.span(), "cluster.peers", format!("'{}' repeats an id or address", entry.get_ref())));
        }
        peers.push(peer);
    }
    if peers.len() > PEERS_MAX {
        let msg = format!("{} nodes; a cluster has at most {PEERS_MAX}", peers.len());
        return Err(at(raw.cluster.peers.span(), "cluster.peers", msg));
    }
    if !peers.iter().any(|(id, _)| *id == node_id) {
        let msg = format!("this node '{node_id}' is not in the peer list (add \"{node_id}@<host>:<port>\")");
        return Err(at(raw.cluster.peers.span(), "cluster.peers", msg));
    }
    let secret_path = resolve(path, raw.cluster.secret_file.get_ref());
    let secret = read_secret(&secret_path).map_err(|m| at(raw.cluster.secret_file.span(), "cluster.secret_file", m))?;
    let addr = |s: &Spanned<String>, field: &str| parse_addr(s.get_ref()).map_err(|m| at(s.span(), field, m));
    let suspicion_ms = match &raw.cluster.suspicion_timeout_ms {
        Some(v) if !(100..=60_000).contains(v.get_ref()) => {
            return Err(at(
                v.span(),
                "cluster.suspicion_timeout_ms",
                format!("{} is outside 100..=60000", v.get_ref()),
            ));
        }
        Some(v) => *v.get_ref(),
        None => SUSPICION_TIMEOUT_MS_DEFAULT,
    };
    let command_ttl_ms = match &raw.cluster.command_ttl_ms {
        Some(v) if !(10_000..=3_600_000).contains(v.get_ref()) => {
            return Err(at(v.span(), "cluster.command_ttl_ms", format!("{} is outside 10000..=3600000", v.get_ref())));
        }
        Some(v) => *v.get_ref(),
        None => COMMAND_TTL_MS_DEFAULT,
    };
    let lease_grace_ms = match &raw.cluster.lease_grace_ms {
        Some(v) if !(2 * suspicion_ms..=600_000).contains(v.get_ref()) => {
            let msg = format!(
                "{} is outside {}..=600000 (at least twice the suspicion timeout)",
                v.get_ref(),
                2 * suspicion_ms
            );
            return Err(at(v.span(), "cluster.lease_grace_ms", msg));
        }
        Some(v) => *v.get_ref(),
        None => control::cluster::liveness::GRACE_MS_DEFAULT.max(2 * suspicion_ms),
    };
    let drain_on_stop_ms = match &raw.cluster.drain_on_stop_ms {
        Some(v) if *v.get_ref() > DRAIN_ON_STOP_MS_MAX => {
            let msg = format!("{} is above {DRAIN_ON_STOP_MS_MAX}", v.get_ref());
            return Err(at(v.span(), "cluster.drain_on_stop_ms", msg));
        }
        Some(v) => *v.get_ref(),
        None => DRAIN_ON_STOP_MS_DEFAULT,
    };
    let data_dir = PathBuf::from(raw.node.data_dir.get_ref());
    let management = crate::management_config::parse(raw.management, &at, &|file| resolve(path, file))?;
    Ok(NodeConfig {
        node_id,
        repository: raw.node.repository.map(PathBuf::from).unwrap_or_else(|| data_dir.join("repository")),
        data_dir,
        cluster_name,
        secret,
        peers,
        join: raw.cluster.join.unwrap_or(false),
        listen_management: addr(&raw.listen.management, "listen.management")?,
        listen_app: addr(&raw.listen.app, "listen.app")?,
        listen_cluster: addr(&raw.listen.cluster, "listen.cluster")?,
        suspicion_timeout: std::time::Duration::from_millis(suspicion_ms),
        command_ttl_ms,
        lease_grace: std::time::Duration::from_millis(lease_grace_ms),
        drain_on_stop: std::time::Duration::from_millis(drain_on_stop_ms),
        cluster_tls: crate::cluster_tls_config::from_raw(path, raw.cluster_tls).map_err(|m| format!("{file}: {m}"))?,
        tls: crate::tls_config::files(path, text, raw.tls)?,
        management,
        artifacts: crate::artifacts_config::parse(&raw.artifacts, &at)?,
        dht: crate::dht_config::parse(&raw.dht, &at)?,
        messaging: crate::messaging::config::parse(&raw.messaging, &at)?,
    })
}

/// One node on its own: no file, loopback ports 8080/8081/8090, a fresh secret.
pub fn dev(data_dir: PathBuf) -> NodeConfig {
    let cluster: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8090));
    let mut secret = vec![0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut secret);
    }
    NodeConfig {
        node_id: "dev".into(),
        repository: PathBuf::from("target/slices-repo"),
        data_dir,
        cluster_name: "dev".into(),
        secret,
        peers: vec![("dev".into(), cluster)],
        join: false,
        listen_management: SocketAddr::from(([127, 0, 0, 1], 8080)),
        listen_app: SocketAddr::from(([127, 0, 0, 1], 8081)),
        listen_cluster: cluster,
        suspicion_timeout: std::time::Duration::from_millis(SUSPICION_TIMEOUT_MS_DEFAULT),
        command_ttl_ms: COMMAND_TTL_MS_DEFAULT,
        lease_grace: std::time::Duration::from_millis(control::cluster::liveness::GRACE_MS_DEFAULT),
        drain_on_stop: std::time::Duration::ZERO,
        cluster_tls: None,
        tls: None,
        management: Default::default(),
        artifacts: Default::default(),
        dht: Default::default(),
        messaging: Default::default(),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes().iter().take(offset).filter(|&&b| b == b'\n').count() + 1
}

pub fn check_node_id(id: &str) -> Result<String, String> {
    check_name(id)
}

fn check_name(name: &str) -> Result<String, String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok_char) {
        return Err(format!("'{name}' must be 1-64 characters of letters, digits, '-', '_' or '.'"));
    }
    Ok(name.to_string())
}

fn parse_peer(entry: &str) -> Result<(String, SocketAddr), String> {
    let (id, addr) =
        entry.split_once('@').ok_or_else(|| format!("'{entry}' is not of the form \"node-id@host:port\""))?;
    Ok((check_name(id)?, parse_addr(addr)?))
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let mut resolved = text.to_socket_addrs().map_err(|e| format!("'{text}' is not a host:port address ({e})"))?;
    resolved.next().ok_or_else(|| format!("'{text}' resolves to no address"))
}

fn resolve(config_path: &Path, file: &str) -> PathBuf {
    let file = PathBuf::from(file);
    match config_path.parent() {
        Some(dir) if file.is_relative() => dir.join(file),
        _ => file,
    }
}

fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read secret {}: {e}", path.display()))?;
    crate::management_config::check_private(path)?;
    if bytes.is_empty() {
        return Err(format!("secret file {} is empty", path.display()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_secret() -> (PathBuf, PathBuf) {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("aether-config-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, b"s3cret").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        (dir.join("aetherd.toml"), secret)
    }

    fn sample(secret: &Path) -> String {
        format!(
            r#"[node]
id = "node-1"
data_dir = "/var/lib/aether/node-1"
[cluster]
name = "demo"
secret_file = "{}"
peers = ["node-1@127.0.0.1:8090", "node-2@127.0.0.1:8190", "node-3@127.0.0.1:8290"]
[listen]
management = "127.0.0.1:8080"
app = "127.0.0.1:8081"
cluster = "127.0.0.1:8090"
"#,
            secret.display()
        )
    }

    #[test]
    fn the_documented_example_parses() {
        let (path, secret) = write_secret();
        let config = parse(&path, &sample(&secret)).unwrap();
        assert_eq!(config.node_id, "node-1");
        assert_eq!(config.peers.len(), 3);
        assert_eq!(config.secret, b"s3cret");
        assert_eq!(config.listen_app, "127.0.0.1:8081".parse::<SocketAddr>().unwrap());
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let (path, secret) = write_secret();
        let good = sample(&secret);
        let cases = [
            (good.replace("[listen]", "colour = \"red\"\n[listen]"), "line 8", "colour"),
            (good.replace("name = \"demo\"\n", ""), "", "name"),
            (good.replace("node-1@127.0.0.1:8090", "node-9@127.0.0.1:8090"), "line 7", "not in the peer list"),
            (good.replace("127.0.0.1:8081", "nowhere"), "line 10", "listen.app"),
            (good.replace(&secret.display().to_string(), "/nonexistent/secret"), "line 6", "cannot read secret"),
            (good.replace("[node]", "[node"), "line 1", ""),
            (good.replace("node-2@127.0.0.1:8190", "node-1@127.0.0.1:8190"), "line 7", "repeats"),
        ];
        for (text, line, needle) in cases {
            let err = parse(&path, &text).err().unwrap_or_else(|| panic!("accepted:\n{text}"));
            assert!(err.starts_with(&path.display().to_string()), "{err}");
            assert!(err.contains(line), "{err} lacks {line}");
            assert!(err.contains(needle), "{err} lacks {needle}");
        }
    }

    #[test]
    fn the_command_ttl_defaults_and_is_checked_against_the_client_deadline() {
        let (path, secret) = write_secret();
        assert_eq!(parse(&path, &sample(&secret)).unwrap().command_ttl_ms, COMMAND_TTL_MS_DEFAULT);
        let with = |ttl: u64| sample(&secret).replace("[listen]", &format!("command_ttl_ms = {ttl}\n[listen]"));
        assert_eq!(parse(&path, &with(60_000)).unwrap().command_ttl_ms, 60_000);
        let err = parse(&path, &with(5_000)).unwrap_err();
        assert!(err.contains("cluster.command_ttl_ms") && err.contains("line 8"), "{err}");
        assert!(COMMAND_TTL_MS_DEFAULT >= 2 * crate::replication::CLIENT_DEADLINE.as_millis() as u64);
    }

    #[test]
    fn an_open_secret_file_names_the_chmod() {
        let (path, secret) = write_secret();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let err = parse(&path, &sample(&secret)).unwrap_err();
        assert!(
            err.contains("cluster.secret_file") && err.contains(&format!("chmod 600 {}", secret.display())),
            "{err}"
        );
    }

    #[test]
    fn the_management_section_parses_and_errors_name_the_field() {
        let (path, secret) = write_secret();
        let key = secret.with_file_name("admin.key");
        std::fs::write(&key, "a-long-enough-admin-key").unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let section = "[management]\nkey_file = \"admin.key\"\nallowed_origins = [\"https://ui.example\"]\nhost_names = [\"aether.lan\"]\n";
        let config = parse(&path, &format!("{}{section}", sample(&secret))).unwrap();
        assert_eq!(config.management.key.as_deref(), Some("a-long-enough-admin-key"));
        assert_eq!(config.management.key_file, Some(key.clone()));
        assert_eq!(config.management.allowed_origins, ["https://ui.example"]);
        assert_eq!(config.management.host_names, ["aether.lan"]);
        assert!(!config.management.allow_unauthenticated);
        let bad_origin = format!("{}[management]\nallowed_origins = [\"ui.example\"]\n", sample(&secret));
        let err = parse(&path, &bad_origin).unwrap_err();
        assert!(err.contains("line 13") && err.contains("management.allowed_origins"), "{err}");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
        let err = parse(&path, &format!("{}{section}", sample(&secret))).unwrap_err();
        assert!(err.contains("line 13") && err.contains("management.key_file") && err.contains("chmod 600"), "{err}");
        let unknown = format!("{}[management]\nauth = false\n", sample(&secret));
        assert!(parse(&path, &unknown).unwrap_err().contains("auth"));
    }

    #[test]
    fn the_lease_grace_period_defaults_and_is_bounded_by_the_suspicion_timeout() {
        let (path, secret) = write_secret();
        let config = parse(&path, &sample(&secret)).unwrap();
        assert_eq!(config.lease_grace, std::time::Duration::from_secs(5));
        let set = |lines: &str| sample(&secret).replace("[listen]", &format!("{lines}[listen]"));
        let config = parse(&path, &set("lease_grace_ms = 8000\n")).unwrap();
        assert_eq!(config.lease_grace, std::time::Duration::from_secs(8));
        let config = parse(&path, &set("drain_on_stop_ms = 0\n")).unwrap();
        assert_eq!(config.drain_on_stop, std::time::Duration::ZERO);
        assert!(parse(&path, &set("drain_on_stop_ms = 600001\n")).unwrap_err().contains("cluster.drain_on_stop_ms"));
        let err = parse(&path, &set("suspicion_timeout_ms = 1000\nlease_grace_ms = 1500\n")).unwrap_err();
        assert!(err.contains("line 9") && err.contains("cluster.lease_grace_ms") && err.contains("2000"), "{err}");
    }

    #[test]
    fn empty_secret_is_refused() {
        let (path, secret) = write_secret();
        std::fs::write(&secret, b"").unwrap();
        assert!(parse(&path, &sample(&secret)).unwrap_err().contains("is empty"));
    }
}
