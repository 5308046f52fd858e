//! `aetherd`: the Aether node daemon.
//!
//! Reads its config (or takes `--dev` defaults), starts the cluster transport's event loop, the management
//! API and, when slices are named, the app port; then waits for SIGTERM or SIGINT and stops each part in
//! turn (SIGHUP in the meantime reloads the `[tls]` certificate of both HTTP ports). A bad config or a
//! port that cannot be bound exits non-zero with one line saying why. At start the soft open-file limit
//! is raised to the hard one, so the HTTP ports' connection budget is as large as the host allows.
//!
//! Started as `aetherd --check-library ROOT NODE G:A:V` it is no node but the check of one upload, in a
//! process of its own so the library's load-time code cannot harm the node (`artifacts::check_process`).

mod app;
mod artifacts;
mod artifacts_config;
mod backend;
mod blobs;
mod cluster_tls_config;
mod config;
mod debug_port;
mod deploy;
mod dht_config;
mod events;
mod forward;
mod join;
mod live;
mod logger;
mod management_config;
mod managers;
mod membership;
mod messaging;
mod metrics;
mod node;
mod replication;
mod repository_listing;
mod restore_backup;
mod roster;
mod send_refusals;
mod slice_state;
mod snapshots;
mod stop;
mod storage;
mod systemd;
mod tls_config;

use config::NodeConfig;
use log::{error, info};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

/// Threads the forwarded-calls pool keeps while idle; it grows while calls outnumber idle threads.
const FORWARDED_THREADS_IDLE: usize = 2;
const USAGE: &str = "usage: aetherd --config FILE | --dev
  --config FILE       node configuration (TOML)
  --dev               one node with defaults and no file (ports 8080, 8081, 8090)
  --management ADDR   override the management listen address
  --app ADDR          override the app (HTTP) listen address
  --cluster ADDR      override the cluster listen address (dev mode)
  --data-dir DIR      override the data directory
  --repo DIR          local slice repository (Maven layout; default target/slices-repo)
  --slice G:A:V       with --dev only: load and start this slice at once (repeatable)
  --log-level LEVEL   error, warn, info (default), debug or trace; also AETHER_LOG
  --restore FILE      start a new cluster from a backup (POST /api/backup): every node of it, each on an
                      empty data directory, with the same FILE";

#[derive(Default)]
struct Args {
    config: Option<PathBuf>,
    dev: bool,
    management: Option<SocketAddr>,
    app: Option<SocketAddr>,
    cluster: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    repo: Option<PathBuf>,
    slices: Vec<String>,
    log_level: Option<String>,
    restore: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args::default();
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let addr = |text: String, name: &str| text.parse::<SocketAddr>().map_err(|e| format!("{name} '{text}': {e}"));
        match flag.as_str() {
            "--config" => parsed.config = Some(PathBuf::from(value("--config")?)),
            "--dev" => parsed.dev = true,
            "--management" => parsed.management = Some(addr(value("--management")?, "--management")?),
            "--app" => parsed.app = Some(addr(value("--app")?, "--app")?),
            "--cluster" => parsed.cluster = Some(addr(value("--cluster")?, "--cluster")?),
            "--data-dir" => parsed.data_dir = Some(PathBuf::from(value("--data-dir")?)),
            "--repo" => parsed.repo = Some(PathBuf::from(value("--repo")?)),
            "--slice" => parsed.slices.push(value("--slice")?),
            "--log-level" => parsed.log_level = Some(value("--log-level")?),
            "--restore" => parsed.restore = Some(PathBuf::from(value("--restore")?)),
            "--help" | "-h" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    if parsed.dev == parsed.config.is_some() {
        return Err(format!("give exactly one of --config FILE or --dev\n{USAGE}"));
    }
    if !parsed.slices.is_empty() && !parsed.dev {
        return Err(format!(
            "--slice works only with --dev: a cluster node runs the slices its blueprints place on it \
             (POST /api/blueprints)\n{USAGE}"
        ));
    }
    Ok(parsed)
}

fn node_config(args: &Args) -> Result<NodeConfig, String> {
    let mut config = match &args.config {
        Some(path) => config::load(path)?,
        None => config::dev(std::env::temp_dir().join("aether-dev")),
    };
    if let Some(addr) = args.management {
        config.listen_management = addr;
    }
    if let Some(addr) = args.app {
        config.listen_app = addr;
    }
    if let (Some(addr), true) = (args.cluster, args.dev) {
        config.listen_cluster = addr;
        config.peers = vec![(config.node_id.clone(), addr)];
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(repo) = &args.repo {
        config.repository = repo.clone();
    }
    Ok(config)
}

/// This very program, to run as the upload check process: `/proc/self/exe` names the running image even
/// after the file was replaced or removed (an upgrade in place), so the check is always this version's.
fn this_program() -> Result<PathBuf, String> {
    let proc_self = PathBuf::from("/proc/self/exe");
    if proc_self.exists() {
        return Ok(proc_self);
    }
    std::env::current_exe().map_err(|e| format!("cannot find this program to check uploads with: {e}"))
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().is_some_and(|first| first == artifacts::CHECK_FLAG) {
        return artifacts::check_process(&raw[1..]);
    }
    let args = match parse_args(raw.into_iter()) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("aetherd: {message}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            eprintln!("aetherd: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let level_text = args.log_level.clone().or_else(|| std::env::var("AETHER_LOG").ok()).unwrap_or("info".into());
    let level = logger::parse_level(&level_text)?;
    let config = node_config(args)?;
    logger::init(&config.node_id, level);
    match httpd::raise_nofile_limit() {
        Ok(limit) => info!("open-file limit {limit}"),
        Err(e) => log::warn!("{e}"),
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("data directory {}: {e}", config.data_dir.display()))?;
    let auth = Arc::new(mgmt::Auth::new(management_config::auth_config(&config, args.dev)?));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let stop_bound = stop::bound_from_env()?;
    let lifecycle = deploy::Settings::from_env()?;

    let seed = args.restore.as_deref().map(restore_backup::read).transpose()?;
    let (mut storage, mut recovered) = storage::Storage::open(&config.data_dir)?;
    let roster = roster::establish(&config, || {
        join::fetch_roster(&config, net_config(&config, &roster::Roster::seed(&config.peers)), || {
            signals.pending().next().is_some()
        })
    })?;
    let consensus_config = consensus_config(&config, &roster)?;
    if let Some(seed) = seed {
        let genesis = consensus_config.members;
        restore_backup::seed(&mut storage, &mut recovered, &config.data_dir, seed, genesis)?;
    }
    let learner = roster
        .roster
        .get(&config.node_id)
        .filter(|m| m.role == roster::Role::Learner)
        .map(|_| consensus::Members::from_bits(roster.roster.voter_bits()));
    let replication = replication::Replication::new(consensus_config, storage, recovered, random_u64(), learner)?;
    let container = container::Container::new(container_config(&config, &lifecycle))
        .map_err(|e| format!("slice container: {e}"))?;
    let container = Arc::new(container);
    let loop_handle: Arc<OnceLock<net::NetHandle<node::Command>>> = Arc::default();
    let provision = Arc::new(deploy::Provisioner::new(config.repository.clone(), loop_handle.clone()));
    let done = deploy_done_sender(loop_handle.clone());
    let deployer = deploy::Deployer::start(container.clone(), lifecycle.policy, Some(Arc::clone(&provision)), done)?;
    let storage = storage_plane(&config)?;
    let node_ids: Vec<String> = config.peers.iter().map(|(id, _)| id.clone()).collect();
    let metrics = metrics::Telemetry::new(&config.node_id, &node_ids);
    let slow_call_ms = metrics::slow_threshold_from_env()?.unwrap_or(live::SLOW_CALL_MS_DEFAULT);
    metrics.set_slow_threshold_ms(slow_call_ms);
    let events = Arc::new(events::EventLog::new(&config.node_id, managers::wall_ms().saturating_mul(1000)));
    let settings = Arc::new(live_settings(&lifecycle, slow_call_ms));
    let slow_calls = Arc::clone(&metrics);
    settings.on_change("slow_call_ms", move |ms| slow_calls.set_slow_threshold_ms(ms));
    let drain_on_stop = Arc::new(stop::DrainOnStop::default());
    let slice_watches = slice_state::WatchHub::new();
    install_slice_state(&container, &loop_handle, &slice_watches)?;
    let data = node::DataPlane {
        calls: forward::Calls::new(),
        forwarded: Arc::default(),
        registry: Arc::default(),
        handle: loop_handle.clone(),
        metrics: Arc::clone(&metrics),
        events: Arc::clone(&events),
        settings: Arc::clone(&settings),
        slice_watches,
        scheduled_calls: Arc::default(),
        drain_on_stop: Arc::clone(&drain_on_stop),
    };
    let (calls, forwarded, registry) = (data.calls.clone(), data.forwarded.clone(), data.registry.clone());
    let scheduled_calls = Arc::clone(&data.scheduled_calls);
    let deliveries = messaging::DeliveryPool::start(config.messaging.delivery_threads, loop_handle.clone())?;
    container.set_publisher(Arc::new(messaging::NodePublisher {
        node: config.node_id.clone(),
        handle: loop_handle.clone(),
    }));
    let net_config = net_config(&config, &roster.roster);
    let handler = node::Node::new(config.clone(), roster, replication, config.suspicion_timeout, Some(deployer), data)
        .with_storage(storage)
        .with_messaging(config.messaging, Arc::clone(&deliveries));
    let net = net::spawn(net_config, handler).map_err(|e| format!("cluster port {}: {e}", config.listen_cluster))?;
    let _ = loop_handle.set(net.handle.clone());
    blobs::debug::start_from_env(net.handle.clone())?;
    if let Some(settings) = config.cluster_tls.clone() {
        cluster_tls_config::reload_on_sighup(settings, net.handle.clone())?;
    }
    let app = match start_app(args, &config)? {
        Some(dev_app) => dev_app,
        None => {
            let forward = Arc::new(forward::NodeForward { calls, handle: net.handle.clone() });
            let options = app::AppOptions {
                tls: config.tls.clone(),
                metrics: Some(Arc::clone(&metrics)),
                ..app::AppOptions::from_env()
            };
            let app = app::AppServer::start_cluster(
                config.listen_app,
                config.node_id.clone(),
                container.clone(),
                registry,
                forward,
                options,
            )?;
            app.report_health_to(forward::health_sink(net.handle.clone()));
            let pool = app::ForwardedCalls::start(app.dispatcher(), FORWARDED_THREADS_IDLE, 1024)?;
            let _ = forwarded.set(pool);
            let _ = scheduled_calls.set(app.dispatcher());
            app
        }
    };
    let _ = deliveries.dispatcher.set(app.dispatcher());
    settings.on_change("call_deadline_ms", {
        let set = app.call_deadline_setter();
        move |ms| set(std::time::Duration::from_millis(ms))
    });
    if let Some(ms) = settings.get("call_deadline_ms") {
        app.set_call_deadline(std::time::Duration::from_millis(ms));
    }
    let backend = Arc::new(backend::NodeBackend {
        events,
        settings,
        handle: net.handle.clone(),
        faults_allowed: std::env::var("AETHER_FAULT_INJECTION").is_ok_and(|v| v == "1"),
        repository: config.repository.clone(),
        http_ports: Arc::default(),
        app_serving: Some(app.serving_flag()),
        trusted_keys: config.artifacts.trusted_keys.clone(),
        metrics: Arc::clone(metrics.board()),
        dry_runs: mgmt::DryRuns::default(),
        declared_routes: Arc::new(deploy::DeclaredRoutes::new(Arc::clone(&container), config.repository.clone())),
        artifact_bytes_max: config.artifacts.max_bytes,
        library_check: Arc::new(artifacts::LibraryCheck::new(&config.data_dir, &config.node_id, this_program()?)?),
        blobs: blobs::Blobs::new(net.handle.clone()),
        provision: Arc::clone(&provision),
    });
    let ports = backend.http_ports.clone();
    let management_http = mgmt::http_config(config.listen_management, 64, config.tls.clone());
    let screener = Arc::clone(&auth);
    // Without authentication a KV write never waits on this port (with it, checking a key asks the store).
    let quick = Arc::clone(&auth);
    let management = mgmt::Server::start_quick(
        management_http,
        config.artifacts.max_bytes,
        move |req| mgmt::screen(&screener, req),
        move |req| !quick.enabled() && mgmt::is_kv_write(req),
        move |req| mgmt::serve(&auth, &*backend, req),
    )?;
    metrics.add_port("management", management.connections_gauge());
    metrics.add_port("app", app.connections_gauge());
    if let Ok(mut ports) = ports.lock() {
        ports.push(("management".into(), management.accepting_flag()));
        ports.push(("app".into(), app.accepting_flag()));
    }
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    info!(
        "node {} of cluster '{}' up: management {scheme}://{}, app {scheme}://{}, cluster {} ({} nodes)",
        config.node_id,
        config.cluster_name,
        management.addr(),
        app.addr(),
        net.local_addr,
        config.peers.len()
    );

    // The loop ending on its own (it never should) stops the node like a signal, and is an error.
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loop_done = watch_loop(net.thread, stopping.clone())?;
    let mut signal = None;
    for received in signals.forever() {
        if received != signal_hook::consts::SIGHUP {
            signal = Some(received);
            break;
        }
        // SIGHUP: new TLS certificates; each port keeps its old one if the files do not load.
        if config.tls.is_some() {
            info!("SIGHUP: reloading the TLS certificate");
            let reloaded = management.reload_tls().and_then(|()| app.reload_tls());
            if let Err(e) = reloaded {
                error!("TLS reload failed, the ports keep their certificate: {e}");
            }
        }
    }
    // Hand this node's instances over first, when the cluster can take them (see `stop`).
    drain_on_stop.run(&mut signals, config.drain_on_stop);
    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    info!("received signal {}; stopping (at most {} s)", signal.unwrap_or_default(), stop_bound.as_secs());
    let progress = stop::arm(signals, stop_bound)?;
    systemd::Notifier::from_env().stopping();
    progress.step("the management API");
    management.stop();
    if let Some(pool) = forwarded.get() {
        progress.step("the forwarded-call pool");
        pool.stop();
    }
    progress.step("the app port");
    app.stop();
    progress.step("the event loop");
    let _ = net.handle.stop();
    let outcome = loop_done.recv().map_err(|_| "the event loop thread vanished".to_string())?;
    match outcome {
        Ok((mut node, died)) => {
            node.shutdown(&progress);
            if died {
                return Err("the event loop stopped on its own; see the log above".into());
            }
        }
        Err(()) => return Err("the event loop panicked; see the log above".into()),
    }
    info!("stopped");
    Ok(())
}

type LoopOutcome = Result<(node::Node, bool), ()>;

/// Joins the event loop on a thread of its own; if it ends before a shutdown began, raises SIGTERM so
/// main stops everything else and exits non-zero. Hands the loop's handler back for its shutdown.
fn watch_loop(
    thread: std::thread::JoinHandle<node::Node>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
) -> Result<std::sync::mpsc::Receiver<LoopOutcome>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("loop-watch".into())
        .spawn(move || {
            let joined = thread.join();
            let died = !stopping.load(std::sync::atomic::Ordering::SeqCst);
            if died {
                error!("the event loop ended unexpectedly; stopping the node");
                let _ = signal_hook::low_level::raise(signal_hook::consts::SIGTERM);
            }
            let _ = tx.send(joined.map(|node| (node, died)).map_err(|_| ()));
        })
        .map_err(|e| format!("cannot start the loop watcher: {e}"))?;
    Ok(rx)
}

/// The live settings, starting from the values the node was started with (environment or defaults).
fn live_settings(lifecycle: &deploy::Settings, slow_call_ms: u64) -> live::LiveSettings {
    let deadline = app::AppOptions::from_env().call_deadline;
    live::LiveSettings::new([
        u64::from(lifecycle.policy.failures_max),
        lifecycle.policy.backoff_base_ms,
        u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        slow_call_ms,
    ])
}

/// Dev mode with `--slice` flags: the app port loads those slices itself and serves their routes.
fn start_app(args: &Args, config: &NodeConfig) -> Result<Option<app::AppServer>, String> {
    if args.slices.is_empty() {
        return Ok(None);
    }
    let app_config = app::AppConfig {
        listen: config.listen_app,
        node_id: config.node_id.clone(),
        repo: config.repository.clone(),
        slices: args.slices.clone(),
        work_dir: Some(loaded_dir(config)),
        trusted_keys: config.artifacts.trusted_keys.clone(),
    };
    let options = app::AppOptions { tls: config.tls.clone(), ..app::AppOptions::from_env() };
    app::AppServer::start_with(app_config, options).map(Some)
}

/// This node's storage-plane replica, its entries in `{data_dir}/dht`.
fn storage_plane(config: &NodeConfig) -> Result<node::StoragePlane, String> {
    let store = node::NodeStore::open(&config.data_dir.join("dht"))?;
    let ids: Vec<String> = config.peers.iter().map(|(id, _)| id.clone()).collect();
    Ok(node::StoragePlane::new(&config.node_id, &ids, config.dht.clone(), store, config.lease_grace))
}

/// Private copies of slice libraries are made in `{data_dir}/loaded` (0700, checked at start).
fn loaded_dir(config: &NodeConfig) -> std::path::PathBuf {
    config.data_dir.join("loaded")
}

/// Installs the node's slice state (what `ctx.kv()` reaches) on the container, and starts the test facility
/// that drives it without a slice when `AETHER_SLICE_STATE_DEBUG` asks for it.
fn install_slice_state(
    container: &Arc<container::Container>,
    loop_handle: &Arc<OnceLock<net::NetHandle<node::Command>>>,
    hub: &Arc<slice_state::WatchHub>,
) -> Result<(), String> {
    let deliver = Arc::new(slice_state::watch::ContainerDeliver::new(container));
    let state = slice_state::NodeSliceState::new(Arc::clone(loop_handle), Arc::clone(hub), deliver);
    slice_state::install(container, Arc::new(state));
    slice_state::debug::start_from_env(|recorder| {
        slice_state::NodeSliceState::new(Arc::clone(loop_handle), Arc::clone(hub), recorder)
    })?;
    Ok(())
}

/// The node's slice container: its repository, its private copy folder, the keys it trusts, its start timeout.
fn container_config(config: &NodeConfig, lifecycle: &deploy::Settings) -> container::ContainerConfig {
    let mut container = container::ContainerConfig::new(&config.repository, &config.node_id);
    if let Some(timeout) = lifecycle.start_timeout {
        container.timeouts.start = timeout;
    }
    container.work_dir = loaded_dir(config);
    container.trusted_keys = config.artifacts.trusted_keys.clone();
    container
}

/// The transport's config: every member of `roster` other than this node is a peer, in roster order (the
/// node maps transport peers to members by that order).
fn net_config(config: &NodeConfig, roster: &roster::Roster) -> net::NetConfig {
    let peers = roster
        .members
        .iter()
        .filter(|m| m.id != config.node_id)
        .map(|m| net::PeerSpec { id: m.id.clone(), addr: m.address })
        .collect();
    let mut net_config =
        net::NetConfig::new(&config.node_id, &config.cluster_name, &config.secret, config.listen_cluster, peers);
    net_config.tls = config.cluster_tls.as_ref().map(|t| t.tls.clone());
    net_config
}

/// The consensus config: this node's replica id from the roster, and the cluster's membership at slot 0
/// (the genesis members, replica ids `0..n`), from which every reconfiguration in the log replays.
fn consensus_config(config: &NodeConfig, roster: &roster::RosterFile) -> Result<consensus::Config, String> {
    let me = roster.roster.get(&config.node_id).ok_or_else(|| {
        format!(
            "this node ({}) is not a member of its cluster any more ({}): it was removed. Wipe the data \
             directory and join again (`[cluster] join = true`) to bring it back",
            config.node_id,
            roster::file_path(&config.data_dir).display()
        )
    })?;
    let n = u8::try_from(roster.genesis.len()).unwrap_or(u8::MAX);
    let mut c =
        consensus::Config::new(n, consensus::ReplicaId(me.replica), coin_seed(&config.secret, &config.cluster_name));
    // Control-plane values (blueprints, records) go up to the store's 1 MiB value limit.
    c.payload_bytes_max = 1024 * 1024 + 4096;
    c.batch_bytes_max = 4 * 1024 * 1024;
    c.command_ttl_ms = config.command_ttl_ms;
    Ok(c)
}

/// The common coin's seed: a keyed hash of the cluster secret, the same on every node, unknown outside.
fn coin_seed(secret: &[u8], cluster: &str) -> u64 {
    let mut first = crc32fast::Hasher::new();
    first.update(b"aether-coin-1");
    first.update(secret);
    first.update(cluster.as_bytes());
    let mut second = crc32fast::Hasher::new();
    second.update(cluster.as_bytes());
    second.update(secret);
    second.update(b"aether-coin-2");
    (u64::from(first.finalize()) << 32) | u64::from(second.finalize())
}

/// A per-boot random number (client ids must never repeat across restarts).
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if read.is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return nanos.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_le_bytes(bytes)
}

/// Hands the deployer's results to the event loop (waiting for the loop's handle if a job finished before
/// the loop was reachable).
fn deploy_done_sender(
    handle: Arc<OnceLock<net::NetHandle<node::Command>>>,
) -> impl Fn(deploy::JobDone) + Send + 'static {
    move |done| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while handle.get().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if let Some(h) = handle.get() {
            let _ = h.command(node::Command::DeployDone(done));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn slice_flags_need_dev_mode() {
        let error = args(&["--config", "node.toml", "--slice", "g:a:1.0.0"]).err().unwrap_or_default();
        assert!(error.starts_with("--slice works only with --dev"), "{error}");
        assert_eq!(args(&["--dev", "--slice", "g:a:1.0.0"]).map(|a| a.slices.len()), Ok(1));
    }
}
