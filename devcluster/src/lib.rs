//! Local clusters of real `aetherd` processes on 127.0.0.1, for `cargo xtask run / cluster` and for the
//! cluster tests: writes each node's config and the shared secret into a folder, starts, stops (SIGTERM),
//! kills (SIGKILL) and restarts processes, and talks to their management API over plain HTTP/1.1
//! (with the cluster's admin key when [`ClusterSpec::with_auth`] turned authentication on).
//!
//! Invariant: a `LocalCluster` dropped without `detach` leaves no process behind.

mod http;
mod keepalive;

pub use http::{http, http_with, HttpResponse};
pub use keepalive::{KeepAlive, KeepAliveError};

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where one node listens and keeps its files.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub id: String,
    pub management: SocketAddr,
    pub app: SocketAddr,
    pub cluster: SocketAddr,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

/// How to lay a cluster out.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub dir: PathBuf,
    pub aetherd: PathBuf,
    pub cluster_name: String,
    /// Ports from here in steps of 100 per node (mgmt +0, app +1, cluster +10); `None` takes free ports.
    pub base_port: Option<u16>,
    pub env: Vec<(String, String)>,
    pub extra_args: Vec<String>,
    /// TOML appended to every node's config file (extra sections; relative paths in it are relative to
    /// the node's own folder, where the config file lives).
    pub extra_config: String,
    /// With a key, authentication is on: the key is written to `{dir}/admin.key` (mode 0600), named as every
    /// node's `[management] key_file`, and sent by this cluster's own requests ([`LocalCluster::api`]).
    pub admin_key: Option<String>,
    /// Extra `key = value` lines for every node's `[management]` section.
    pub management: Vec<String>,
}

impl ClusterSpec {
    pub fn new(nodes: usize, dir: &Path, aetherd: &Path) -> ClusterSpec {
        ClusterSpec {
            nodes,
            dir: dir.to_path_buf(),
            aetherd: aetherd.to_path_buf(),
            cluster_name: "demo".into(),
            base_port: None,
            env: vec![("AETHER_FAULT_INJECTION".into(), "1".into())],
            extra_args: Vec::new(),
            extra_config: String::new(),
            admin_key: None,
            management: Vec::new(),
        }
    }

    /// This spec with authentication on, using a fresh random admin key.
    pub fn with_auth(mut self) -> ClusterSpec {
        let mut bytes = [0u8; 32];
        let read = fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
        if read.is_err() {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            bytes[..16].copy_from_slice(&nanos.as_nanos().to_le_bytes());
        }
        self.admin_key = Some(format!("test-admin-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()));
        self
    }
}

pub struct LocalCluster {
    pub spec: ClusterSpec,
    pub nodes: Vec<NodeInfo>,
    children: Vec<Option<Child>>,
    /// The processes were left running ([`LocalCluster::detach`]): their folder stays.
    detached: bool,
}

/// Ports no one listens on right now, picked at random below the kernel's ephemeral range (32768 and up by
/// default): between this pick and the node's bind, an outgoing connection of another test could take an
/// ephemeral port, never one of these. Distinct, since each is held while the others are picked; any that
/// cannot be had there come from the kernel.
pub fn free_ports(n: usize) -> Vec<u16> {
    const LOW: u64 = 10_000;
    const SPAN: u64 = 22_000;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut state = (u64::from(std::process::id()) << 32) ^ (nanos as u64) | 1;
    let mut listeners: Vec<TcpListener> = Vec::with_capacity(n);
    for _ in 0..n * 50 {
        if listeners.len() == n {
            break;
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = (LOW + state % SPAN) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(listener);
        }
    }
    while listeners.len() < n {
        match TcpListener::bind("127.0.0.1:0") {
            Ok(listener) => listeners.push(listener),
            Err(_) => break,
        }
    }
    listeners.iter().filter_map(|l| l.local_addr().ok()).map(|a| a.port()).collect()
}

impl LocalCluster {
    /// Writes the secret and every node's config; starts nothing.
    pub fn prepare(spec: ClusterSpec) -> Result<LocalCluster, String> {
        fs::create_dir_all(&spec.dir).map_err(|e| format!("{}: {e}", spec.dir.display()))?;
        let secret = spec.dir.join("secret");
        let mut secret_bytes = [0u8; 32];
        let random =
            fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret_bytes));
        random.map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
        write_private(&secret, &secret_bytes)?;
        let mut management = spec.management.clone();
        if let Some(key) = &spec.admin_key {
            let file = spec.dir.join("admin.key");
            write_private(&file, key.as_bytes())?;
            management.push(format!("key_file = \"{}\"", file.display()));
        }
        let management =
            if management.is_empty() { String::new() } else { format!("[management]\n{}\n", management.join("\n")) };
        let nodes = layout(&spec)?;
        let peers: Vec<String> = nodes.iter().map(|n| format!("\"{}@{}\"", n.id, n.cluster)).collect();
        for node in &nodes {
            let text = format!(
                "[node]\nid = \"{}\"\ndata_dir = \"{}\"\n[cluster]\nname = \"{}\"\nsecret_file = \"{}\"\npeers = [{}]\n\
                 [listen]\nmanagement = \"{}\"\napp = \"{}\"\ncluster = \"{}\"\n{management}",
                node.id,
                node.data_dir.display(),
                spec.cluster_name,
                secret.display(),
                peers.join(", "),
                node.management,
                node.app,
                node.cluster
            );
            write(&node.config, format!("{text}{}", spec.extra_config).as_bytes())?;
        }
        let children = nodes.iter().map(|_| None).collect();
        Ok(LocalCluster { spec, nodes, children, detached: false })
    }

    /// Prepares and starts every node.
    pub fn start(spec: ClusterSpec) -> Result<LocalCluster, String> {
        let mut cluster = LocalCluster::prepare(spec)?;
        for i in 0..cluster.nodes.len() {
            cluster.start_node(i)?;
        }
        Ok(cluster)
    }

    pub fn start_node(&mut self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| format!("{}: {e}", node.log.display()))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(&self.spec.aetherd);
        command.arg("--config").arg(&node.config).args(&self.spec.extra_args);
        command.envs(self.spec.env.iter().map(|(k, v)| (k, v)));
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let child = command.spawn().map_err(|e| format!("cannot start {}: {e}", self.spec.aetherd.display()))?;
        self.children[i] = Some(child);
        Ok(())
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }

    /// If node `i` exited by itself: its exit code (`None` inside when a signal ended it). The node counts
    /// as stopped from then on.
    pub fn exited(&mut self, i: usize) -> Option<Option<i32>> {
        let status = self.children[i].as_mut()?.try_wait().ok()??;
        self.children[i] = None;
        Some(status.code())
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (SIGKILL after `grace`); returns the exit code if it exited by itself.
    pub fn stop(&mut self, i: usize, grace: Duration) -> Option<i32> {
        let mut child = self.children[i].take()?;
        let pid = rustix::process::Pid::from_raw(child.id() as i32)?;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        self.start_node(i)
    }

    /// One management request to node `i`, with the admin key when authentication is on.
    pub fn api(&self, i: usize, method: &str, path: &str, body: &[u8]) -> std::io::Result<HttpResponse> {
        self.api_as(i, self.spec.admin_key.as_deref(), method, path, body)
    }

    /// One management request to node `i` with `key` (none: no `Authorization` header).
    pub fn api_as(
        &self,
        i: usize,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<HttpResponse> {
        let bearer = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
        http_with(self.nodes[i].management, method, path, &headers, body)
    }

    /// `GET /api/health` of node `i` as JSON, if it answers.
    pub fn health(&self, i: usize) -> Option<serde_json::Value> {
        let response = self.api(i, "GET", "/api/health", b"").ok()?;
        serde_json::from_slice(&response.body).ok()
    }

    /// Waits until every running node reports `peers_connected == expected`.
    pub fn wait_connected(&self, expected: u64, timeout: Duration) -> Result<(), String> {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.children[i].is_some()).collect();
        wait_for(timeout, || {
            running.iter().all(|&i| self.health(i).and_then(|h| h["peers_connected"].as_u64()) == Some(expected))
        })
        .map_err(|_| format!("nodes did not reach peers_connected = {expected} within {timeout:?}"))
    }

    /// Waits until every running node reports ready (in a quorum and caught up).
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.children[i].is_some()).collect();
        wait_for(timeout, || running.iter().all(|&i| self.health(i).is_some_and(|h| h["ready"] == true)))
            .map_err(|_| format!("nodes were not ready within {timeout:?}"))
    }

    /// Rewrites node `i`'s config so its `peers` are the nodes `peers` (indexes) and, with `join`, it joins a
    /// running cluster (`[cluster] join = true`) instead of seeding a new one. For membership changes: a
    /// cluster formed by some of the prepared nodes, which the others join later.
    pub fn set_peers(&self, i: usize, peers: &[usize], join: bool) -> Result<(), String> {
        let node = &self.nodes[i];
        let text = fs::read_to_string(&node.config).map_err(|e| format!("{}: {e}", node.config.display()))?;
        let listed: Vec<String> =
            peers.iter().map(|&p| format!("\"{}@{}\"", self.nodes[p].id, self.nodes[p].cluster)).collect();
        let mut out = String::new();
        for line in text.lines() {
            if line.starts_with("peers = ") {
                out.push_str(&format!("peers = [{}]\n", listed.join(", ")));
                if join {
                    out.push_str("join = true\n");
                }
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        write(&node.config, out.as_bytes())
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// Leaves the processes running (for `cargo xtask cluster up`); returns their pids.
    pub fn detach(mut self) -> Vec<u32> {
        self.detached = true;
        self.children.iter_mut().filter_map(|c| c.take()).map(|c| c.id()).collect()
    }
}

impl Drop for LocalCluster {
    /// Kills every node. A cluster of a test that passed, laid out under the temporary folder, is removed
    /// with its data (some tests write hundreds of MiB); a failed test's folder stays for its logs.
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        let temporary = self.spec.dir.starts_with(std::env::temp_dir());
        if !self.detached && temporary && !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.spec.dir);
        }
    }
}

/// A condition did not come true in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// Polls `ok` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<(), TimedOut> {
    let deadline = Instant::now() + timeout;
    loop {
        if ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(TimedOut);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn layout(spec: &ClusterSpec) -> Result<Vec<NodeInfo>, String> {
    let ports = match spec.base_port {
        Some(base) => (0..spec.nodes as u16)
            .flat_map(|i| [base + 100 * i, base + 100 * i + 1, base + 100 * i + 10])
            .collect::<Vec<_>>(),
        None => free_ports(spec.nodes * 3),
    };
    if ports.len() < spec.nodes * 3 {
        return Err("could not find free ports on 127.0.0.1".into());
    }
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let nodes = (0..spec.nodes)
        .map(|i| {
            let id = format!("node-{}", i + 1);
            let dir = spec.dir.join(&id);
            NodeInfo {
                management: addr(ports[3 * i]),
                app: addr(ports[3 * i + 1]),
                cluster: addr(ports[3 * i + 2]),
                config: dir.join("aetherd.toml"),
                data_dir: dir.join("data"),
                log: dir.join("aetherd.log"),
                id,
            }
        })
        .collect::<Vec<_>>();
    for node in &nodes {
        let dir = node.config.parent().unwrap_or(&spec.dir);
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(nodes)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a secret readable by its owner only (nodes refuse group- or world-readable secrets).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let at = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(at)?;
    // A file left by an earlier run keeps its mode through open(): set it.
    file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(at)?;
    std::io::Write::write_all(&mut file, bytes).map_err(at)
}

/// Stops a process this tool started earlier (by pid): SIGTERM, then SIGKILL after `grace`.
/// Returns false if no such process was running.
pub fn terminate_pid(pid: u32, grace: Duration) -> bool {
    let Some(raw) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else { return false };
    if rustix::process::kill_process(raw, rustix::process::Signal::TERM).is_err() {
        return false;
    }
    let exited = |p: u32| {
        let stat = fs::read_to_string(format!("/proc/{p}/stat"));
        stat.map(|s| s.contains(") Z ")).unwrap_or(true)
    };
    if wait_for(grace, || exited(pid)).is_err() {
        let _ = rustix::process::kill_process(raw, rustix::process::Signal::KILL);
    }
    true
}

/// A cluster of `nodes` processes of `aetherd` serving the example slices ([`example_slices_repo`]), its files
/// in `{temp}/aether-{name}-{pid}` (emptied first), started and ready on every node within `settle`.
pub fn start_with_examples(nodes: usize, name: &str, aetherd: &Path, settle: Duration) -> Result<LocalCluster, String> {
    let repo = example_slices_repo()?;
    let dir = std::env::temp_dir().join(format!("aether-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(nodes, &dir, aetherd);
    spec.extra_args = vec!["--repo".into(), repo.display().to_string()];
    let cluster = LocalCluster::start(spec)?;
    cluster.wait_ready(settle)?;
    Ok(cluster)
}

/// The example slices, built once per process with `cargo xtask build-slices` into
/// `{workspace}/target/slices-build` (or taken from `$AETHER_SLICES_REPO`); returns the Maven-layout
/// repository folder.
pub fn example_slices_repo() -> Result<PathBuf, String> {
    static REPO: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    REPO.get_or_init(|| {
        if let Some(repo) = std::env::var_os("AETHER_SLICES_REPO") {
            return Ok(PathBuf::from(repo));
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).ok_or("no workspace root")?;
        let target = root.join("target").join("slices-build");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .args(["run", "--quiet", "-p", "xtask", "--", "build-slices"])
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err("building the example slices failed".to_string());
        }
        Ok(target.join("slices-repo"))
    })
    .clone()
}
