//! `aetherd`: the Aether node daemon.
//!
//! Reads its config (or takes `--dev` defaults), starts the cluster transport's event loop, the management
//! API and, when slices are named, the app port; then waits for SIGTERM or SIGINT and stops each part in
//! turn. A bad config or a port that cannot be bound exits non-zero with one line saying why.

mod app;
mod config;
mod logger;
mod node;

use config::NodeConfig;
use log::{error, info};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "usage: aetherd --config FILE | --dev
  --config FILE       node configuration (TOML)
  --dev               one node with defaults and no file (ports 8080, 8081, 8090)
  --management ADDR   override the management listen address
  --app ADDR          override the app (HTTP) listen address
  --cluster ADDR      override the cluster listen address (dev mode)
  --data-dir DIR      override the data directory
  --repo DIR          local slice repository (Maven layout; default target/slices-repo)
  --slice G:A:V       load and start this slice at once (repeatable)
  --log-level LEVEL   error, warn, info (default), debug or trace; also AETHER_LOG";

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
            "--help" | "-h" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    if parsed.dev == parsed.config.is_some() {
        return Err(format!("give exactly one of --config FILE or --dev\n{USAGE}"));
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
    Ok(config)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
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
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("data directory {}: {e}", config.data_dir.display()))?;
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;

    let net = net::spawn(net_config(&config), node::Node::new(config.clone()))
        .map_err(|e| format!("cluster port {}: {e}", config.listen_cluster))?;
    let backend = Arc::new(node::NodeBackend {
        handle: net.handle.clone(),
        faults_allowed: std::env::var("AETHER_FAULT_INJECTION").is_ok_and(|v| v == "1"),
    });
    let management = mgmt::Server::start(config.listen_management, 4, move |req| mgmt::route(&*backend, req))?;
    let app = start_app(args, &config)?;
    info!(
        "node {} of cluster '{}' up: management http://{}, app http://{}, cluster {} ({} nodes)",
        config.node_id,
        config.cluster_name,
        management.addr(),
        config.listen_app,
        net.local_addr,
        config.peers.len()
    );

    let signal = signals.forever().next();
    info!("received signal {}; stopping", signal.unwrap_or_default());
    management.stop();
    if let Some(app) = app {
        app.stop();
    }
    let _ = net.handle.stop();
    let _ = net.thread.join();
    info!("stopped");
    Ok(())
}

fn start_app(args: &Args, config: &NodeConfig) -> Result<Option<app::AppServer>, String> {
    if args.slices.is_empty() && args.repo.is_none() {
        return Ok(None);
    }
    let app_config = app::AppConfig {
        listen: config.listen_app,
        node_id: config.node_id.clone(),
        repo: args.repo.clone().unwrap_or_else(|| PathBuf::from("target/slices-repo")),
        slices: args.slices.clone(),
    };
    app::AppServer::start(app_config).map(Some)
}

fn net_config(config: &NodeConfig) -> net::NetConfig {
    let peers = config
        .peers
        .iter()
        .filter(|(id, _)| *id != config.node_id)
        .map(|(id, addr)| net::PeerSpec { id: id.clone(), addr: *addr })
        .collect();
    net::NetConfig::new(&config.node_id, &config.cluster_name, &config.secret, config.listen_cluster, peers)
}
