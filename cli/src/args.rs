//! The command line: global options (accepted before or after the verb) and one verb per management
//! operation. Parsing is clap's (derive), which also gives every verb its `--help`, the `help` verb, usage
//! errors with exit code 2, and the shell completion scripts.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "aether",
    version,
    about = "Operate an Aether cluster through its management API",
    long_about = "Operate an Aether cluster through its management API.\n\n\
        Without a verb, aether reads verbs line by line (history in ~/.aether_history; `exit` or Ctrl-D leaves).\n\n\
        Exit codes: 0 ok, 1 refused by the server, 2 usage, 3 no node reachable.",
    after_help = "Environment: AETHER_NODE (the node), AETHER_NODES (comma list tried in turn when a node is down), \
        AETHER_API_KEY, AETHER_CA."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub verb: Option<Verb>,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Management address of the node to ask: host:port, http://host:port or https://host:port
    /// [default: 127.0.0.1:8080]
    #[arg(long, global = true, env = "AETHER_NODE", value_name = "ADDR")]
    pub node: Option<String>,
    /// Print the server's JSON instead of a table
    #[arg(long, global = true)]
    pub json: bool,
    /// API key, sent as `Authorization: Bearer KEY`
    // Its own id: verbs have a positional `key` (the KV key, the config key) that must not be taken for it.
    #[arg(
        long = "key",
        id = "api_key",
        global = true,
        env = "AETHER_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// CA certificate(s) (PEM) to trust for https:// nodes [default: the system's bundle]
    #[arg(long, global = true, env = "AETHER_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Seconds to wait for an answer [default: 30]
    #[arg(long, global = true, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: Option<u64>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Verb {
    /// This node's view: leader, quorum, members, applied slot
    Status,
    /// Whether the node is ready (in a quorum and caught up); exit 1 when not
    Health,
    /// Every configured node: address, connected, last seen, lifecycle
    Nodes,
    /// One node in detail, or take it off duty and back: show, drain, activate, shutdown
    #[command(subcommand)]
    Node(NodeVerb),
    /// The cluster's members: list them, add a node (as a learner, then a voter), remove one
    #[command(subcommand)]
    Member(MemberVerb),
    /// Every slice instance in the cluster: node, state, since, error
    Slices,
    /// HTTP routes of the app port: artifact, slice method, instances by node
    Routes,
    /// Deploy, check, inspect and remove blueprints
    #[command(subcommand)]
    Blueprint(BlueprintVerb),
    /// Move deployed artifacts to new versions with traffic split by a ratio: start, list, show, ratio,
    /// promote, complete, rollback
    #[command(subcommand)]
    Rollout(RolloutVerb),
    /// Instance counts set by scaling (the controller or an operator): list, set, clear
    #[command(subcommand)]
    Scale(ScaleVerb),
    /// The scaling controller: show its thresholds, or change some of them
    #[command(subcommand)]
    Controller(ControllerVerb),
    /// Read and write the replicated key-value store (user/ keys)
    #[command(subcommand)]
    Kv(KvVerb),
    /// Upload and list slice libraries
    #[command(subcommand)]
    Artifact(ArtifactVerb),
    /// Back up the whole replicated KV to FILE (written atomically); `aetherd --restore FILE` starts a new
    /// cluster from it
    Backup { file: PathBuf },
    /// Cluster events (node up/down, leader changes, deployments, slice states, ...)
    Events(EventsArgs),
    /// Per-node CPU, memory, loop lag, connections, consensus and call rates
    Metrics(MetricsArgs),
    /// Per slice method calls, errors and latency percentiles, or the slow calls
    Invocations(InvocationsArgs),
    /// Cluster-wide log levels per target
    #[command(subcommand, name = "log-level")]
    LogLevel(LogLevelVerb),
    /// Live settings, cluster-wide or for one node
    #[command(subcommand)]
    Config(ConfigVerb),
    /// Scheduled tasks: timing, next and last run, outcome; pause, resume or run one now
    Tasks {
        #[command(subcommand)]
        action: Option<TasksVerb>,
    },
    /// Topics: messages, subscriptions, cursors, backlog and delivery rates (one topic when named)
    Topics { topic: Option<String> },
    /// Publish a message to a topic: --data TEXT, or the bytes of stdin
    Publish {
        topic: String,
        #[arg(long, allow_hyphen_values = true)]
        data: Option<String>,
    },
    /// Messages a subscriber did not take after its retries: list, show, replay, delete
    #[command(name = "dead-letters")]
    DeadLetters {
        #[command(subcommand)]
        verb: Option<DeadLetterVerb>,
    },
    /// Print a shell completion script
    Completion {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum DeadLetterVerb {
    /// Every dead letter, or those of one topic
    List {
        #[arg(long)]
        topic: Option<String>,
    },
    /// One dead letter, with its payload
    Show { id: String },
    /// Publish its payload again to its subscription only, then remove it
    Replay { id: String },
    /// Remove it
    Delete { id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Subcommand)]
pub enum BlueprintVerb {
    /// Check and store a blueprint (TOML file, `-` for stdin); its slices are then placed and started
    Apply { file: PathBuf },
    /// Check a blueprint and show what would be placed where, storing nothing
    Validate { file: PathBuf },
    /// Every stored blueprint
    List,
    /// One blueprint's slices and where they run
    Get {
        name: String,
        /// Print the stored TOML instead
        #[arg(long)]
        toml: bool,
    },
    /// One blueprint's state: running, deploying, degraded or failed, per slice and instance
    Status { name: String },
    /// Remove a blueprint; its slices are stopped and unloaded everywhere
    Delete { name: String },
}

#[derive(Debug, Clone, Subcommand)]
pub enum RolloutVerb {
    /// Start a rollout: the new versions run beside the deployed ones, then traffic moves to them
    Start(RolloutStart),
    /// Every rollout, running or finished: state, share on the new versions, artifacts, strategy
    List,
    /// One rollout: its artifacts, stages, ratio, thresholds and reason
    Show { id: String },
    /// Set the traffic split by two weights: `ratio ID 1 3` sends 25% of requests to the new versions
    Ratio { id: String, new: u64, old: u64 },
    /// Move a shifting rollout to its next stage's share (100% past the last stage)
    Promote { id: String },
    /// All traffic to the new versions; the blueprint is rewritten to name them
    Complete { id: String },
    /// All traffic back to the old versions; the new ones are retired
    Rollback {
        id: String,
        /// Why, kept in the rollout record [default: rolled back by an operator]
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct RolloutStart {
    /// ARTIFACT VERSION pairs: group:artifact and the version to move it to (up to 8 pairs, moved together
    /// under one ratio)
    #[arg(required = true, num_args = 2.., value_names = ["ARTIFACT", "VERSION"])]
    pub pairs: Vec<String>,
    /// The rollout's id [default: {artifact}-{version} of the first pair]
    #[arg(long)]
    pub id: Option<String>,
    /// How the new versions take over [default: rolling]
    #[arg(long, value_parser = ["rolling", "canary", "blue-green"])]
    pub strategy: Option<String>,
    /// Instances of each new version [default: as the blueprint]
    #[arg(long, value_name = "N")]
    pub instances: Option<u32>,
    /// A stage: PERCENT of requests on the new versions, held HOLD_MS; repeat for more stages
    /// [default: the strategy's]
    #[arg(long = "stage", value_name = "PERCENT:HOLD_MS", value_parser = parse_stage)]
    pub stages: Vec<(u8, u64)>,
    /// The leader walks the stages on its own, then completes (the canary's default)
    #[arg(long, conflicts_with = "manual")]
    pub auto: bool,
    /// The operator moves the rollout on: ratio, promote, complete (the default of rolling and blue-green)
    #[arg(long)]
    pub manual: bool,
    /// Health threshold: highest share of 5xx answers, 0 to 1 (crossed, and worse than the old version: rolled back)
    #[arg(long = "max-error-rate", value_name = "F")]
    pub max_error_rate: Option<f64>,
    /// Health threshold: highest p99 latency in milliseconds (crossed, and worse than the old version: rolled back)
    #[arg(long = "max-p99-ms", value_name = "N")]
    pub max_p99_ms: Option<u64>,
    /// How long the old set is kept after the switch before an automatic completion, in milliseconds
    #[arg(long = "keep-old-ms", value_name = "N")]
    pub keep_old_ms: Option<u64>,
}

/// `PERCENT:HOLD_MS` (or `PERCENT`, held 0 ms), percent 0 to 100.
fn parse_stage(text: &str) -> Result<(u8, u64), String> {
    let (percent, hold) = text.split_once(':').unwrap_or((text, "0"));
    let percent: u8 = percent.parse().ok().filter(|p| *p <= 100).ok_or("PERCENT is a whole number 0 to 100")?;
    let hold: u64 = hold.parse().map_err(|_| "HOLD_MS is a whole number of milliseconds")?;
    Ok((percent, hold))
}

#[derive(Debug, Clone, Subcommand)]
pub enum ScaleVerb {
    /// Every scale record: the count it sets, the count the leader aims the slice at now, who set it and why
    List,
    /// Set a deployed slice's instance count, within its blueprint's min_instances..=max_instances; it holds
    /// until the blueprint is posted with another `instances` (an autoscaled slice's controller goes on from it)
    Set {
        /// group:artifact (a version, if given, is ignored)
        artifact: String,
        /// The instance count
        instances: u32,
        /// Why, kept in the scale record [default: set by an operator]
        #[arg(long)]
        reason: Option<String>,
    },
    /// Drop a slice's scale record: the blueprint's `instances` applies again
    Clear {
        /// group:artifact
        artifact: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum ControllerVerb {
    /// The controller's thresholds (stored, or the defaults); `set KEY=VALUE...` changes some of them
    Config {
        #[command(subcommand)]
        action: Option<ControllerConfigVerb>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum ControllerConfigVerb {
    /// Change thresholds: KEY=NUMBER for cpu_high, cpu_low, calls_high, calls_low, cooldown_ms, warmup_ms;
    /// the keys not given keep their values
    Set {
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_threshold)]
        pairs: Vec<(String, serde_json::Number)>,
    },
}

/// `KEY=NUMBER`: a threshold name (letters, digits, `_`) and a finite number. A whole number is sent as an
/// integer (the `_ms` thresholds take only integers), any other as a float.
fn parse_threshold(text: &str) -> Result<(String, serde_json::Number), String> {
    let (key, value) = text.split_once('=').ok_or("expected KEY=VALUE, as cooldown_ms=5000")?;
    if key.is_empty() || key.len() > 64 || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("'{key}' is not a threshold name (letters, digits and _)"));
    }
    let number: f64 = value.trim().parse().ok().filter(|v: &f64| v.is_finite()).ok_or("VALUE is a number")?;
    // Whole numbers up to 2^53 are exact in an f64, so the cast loses nothing.
    let whole = number.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&number);
    let json = if whole { Some(serde_json::Number::from(number as u64)) } else { serde_json::Number::from_f64(number) };
    Ok((key.to_string(), json.ok_or("VALUE is a finite number")?))
}

#[derive(Debug, Clone, Subcommand)]
pub enum TasksVerb {
    /// Stop a task's timed runs until it is resumed
    Pause {
        /// group:artifact/task (as `aether tasks` lists it)
        id: String,
    },
    /// Resume a task at its next due time after now
    Resume {
        /// group:artifact/task
        id: String,
    },
    /// Run a task once now, recorded like any run
    Trigger {
        /// group:artifact/task
        id: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum KvVerb {
    /// Print a key's value (raw; --json for key, value and version)
    Get {
        key: String,
        /// Answer from the node's own replica, without a consensus round
        #[arg(long)]
        stale: bool,
    },
    /// Write a value: VALUE, or --file FILE (`-` for stdin)
    Put {
        key: String,
        #[arg(required_unless_present = "file", conflicts_with = "file", allow_hyphen_values = true)]
        value: Option<String>,
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Compare-and-set: write only if the key is at this version (0: only if absent)
        #[arg(long = "if-version", value_name = "N")]
        if_version: Option<u64>,
    },
    /// Remove a key
    Delete {
        key: String,
        /// Compare-and-remove: only if the key is at this version
        #[arg(long = "if-version", value_name = "N")]
        if_version: Option<u64>,
    },
    /// The entries under a prefix, a page (at most 1000) at a time
    List {
        #[arg(default_value = "user/")]
        prefix: String,
        #[arg(long)]
        stale: bool,
        /// Start after this key (what the page before said to pass)
        #[arg(long, value_name = "KEY")]
        after: Option<String>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum ArtifactVerb {
    /// Upload a slice library (checked with its SHA-256) to the cluster's repository; a release version
    /// never changes (the same bytes again are accepted, other bytes refused), a -SNAPSHOT may be replaced
    Push {
        /// The library (`-` for stdin)
        file: PathBuf,
        /// Coordinates group:artifact:version
        coords: String,
        /// A signature file (`cargo xtask sign` writes LIB.sig), sent as X-Aether-Signature
        #[arg(long, value_name = "FILE")]
        sig: Option<PathBuf>,
    },
    /// The repository's catalog (and libraries only the node's folder holds)
    List,
    /// One version: size, digests, who uploaded it, the blueprints that use it
    Info {
        /// Coordinates group:artifact:version
        coords: String,
    },
    /// Delete a version from the repository (refused while a blueprint uses it)
    Delete {
        /// Coordinates group:artifact:version
        coords: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Keep printing events as they happen (Ctrl-C stops)
    #[arg(long, short)]
    pub follow: bool,
    /// Events after this sequence number, or this recent (30s, 5m, 1h)
    #[arg(long, value_name = "SEQ|DURATION")]
    pub since: Option<String>,
    /// Most events to list (the server's default is 100, its maximum 1000)
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// History over this range instead of the latest figures
    #[arg(long, value_name = "RANGE", value_parser = ["5m", "15m", "1h", "2h"])]
    pub history: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct InvocationsArgs {
    /// The slow calls (over their method's threshold), newest first
    #[arg(long)]
    pub slow: bool,
    /// Only this artifact (group:artifact:version or group:artifact)
    #[arg(long, value_name = "COORDS", conflicts_with = "slow")]
    pub artifact: Option<String>,
    /// Only this slice method
    #[arg(long, value_name = "METHOD", conflicts_with = "slow")]
    pub method: Option<String>,
    /// Most slow calls to list
    #[arg(long, value_name = "N", requires = "slow")]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum LogLevelVerb {
    /// The default level and every target's
    Get,
    /// Set a target's level on every node (`default` sets the default)
    Set {
        target: String,
        #[arg(value_parser = ["error", "warn", "info", "debug", "trace"])]
        level: String,
    },
    /// Remove a target's level (it follows the default again)
    Reset { target: String },
}

#[derive(Debug, Clone, Subcommand)]
pub enum NodeVerb {
    /// The node's lifecycle, its instances and, while a drain waits, why
    Show { id: String },
    /// Move the node's instances elsewhere (make before break), then mark it DECOMMISSIONED
    Drain {
        id: String,
        /// Why, kept in the node's lifecycle record
        #[arg(long)]
        reason: Option<String>,
    },
    /// Put the node back on duty: it receives instances again
    Activate {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Drain the node, then its process exits cleanly
    Shutdown {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum MemberVerb {
    /// Every member: replica id, cluster address, role (voter or learner) and the slot it has reached
    List,
    /// Add a node as a learner at its cluster address (IP:PORT); start it with `join = true` and the leader
    /// makes it a voter once it has caught up
    Add { id: String, address: String },
    /// Remove a member, up or down, through a consensus reconfiguration
    Remove { id: String },
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConfigVerb {
    /// Settable keys with their effective values, cluster-wide and per-node overrides (one key if named)
    Get { key: Option<String> },
    /// Set a key cluster-wide, or for one node with --node-id (VALUE is JSON when it parses, else a string)
    Set {
        key: String,
        #[arg(allow_hyphen_values = true)]
        value: String,
        /// Only this node (its id, e.g. node-2)
        #[arg(long = "node-id", value_name = "ID")]
        node_id: Option<String>,
    },
    /// Remove a key's override, cluster-wide or for one node with --node-id
    Unset {
        key: String,
        #[arg(long = "node-id", value_name = "ID")]
        node_id: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("aether").chain(args.iter().copied()))
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_verb() {
        let before = parse(&["--node", "h:1", "--json", "kv", "get", "user/a"]).unwrap();
        let after = parse(&["kv", "get", "user/a", "--json", "--node", "h:1"]).unwrap();
        for cli in [before, after] {
            assert_eq!(cli.global.node.as_deref(), Some("h:1"));
            assert!(cli.global.json);
            assert!(matches!(cli.verb, Some(Verb::Kv(KvVerb::Get { ref key, stale: false })) if key == "user/a"));
        }
    }

    #[test]
    fn the_api_key_is_not_confused_with_a_kv_or_config_key() {
        let cli = parse(&["--key", "aek_1", "kv", "put", "user/a", "v"]).unwrap();
        assert_eq!(cli.global.api_key.as_deref(), Some("aek_1"));
        assert!(matches!(cli.verb, Some(Verb::Kv(KvVerb::Put { ref key, .. })) if key == "user/a"));
        let cli = parse(&["config", "unset", "heartbeat_ms", "--key", "aek_2"]).unwrap();
        assert_eq!(cli.global.api_key.as_deref(), Some("aek_2"));
        assert!(matches!(cli.verb, Some(Verb::Config(ConfigVerb::Unset { ref key, .. })) if key == "heartbeat_ms"));
        let cli = Cli::try_parse_from(["aether", "node", "drain", "node-2", "--reason", "disk swap"]).unwrap();
        assert!(matches!(cli.verb, Some(Verb::Node(NodeVerb::Drain { ref id, ref reason }))
            if id == "node-2" && reason.as_deref() == Some("disk swap")));
        assert!(Cli::try_parse_from(["aether", "node", "drain"]).is_err(), "the node id is required");
    }

    #[test]
    fn no_verb_means_interactive() {
        assert!(parse(&[]).unwrap().verb.is_none());
        assert!(parse(&["--json"]).unwrap().verb.is_none());
    }

    #[test]
    fn files_are_positional() {
        let cli = parse(&["blueprint", "validate", "shop.toml"]).unwrap();
        assert!(
            matches!(cli.verb, Some(Verb::Blueprint(BlueprintVerb::Validate { ref file })) if file.to_str() == Some("shop.toml"))
        );
        let cli = parse(&["artifact", "push", "-", "g:a:1.0.0"]).unwrap();
        assert!(
            matches!(cli.verb, Some(Verb::Artifact(ArtifactVerb::Push { ref file, .. })) if file.to_str() == Some("-"))
        );
    }

    #[test]
    fn mistakes_are_usage_errors() {
        for bad in [
            &["nosuchverb"][..],
            &["kv"],
            &["kv", "put", "user/a"],
            &["kv", "put", "user/a", "v", "--file", "f"],
            &["metrics", "--history", "3m"],
            &["log-level", "set", "consensus", "loud"],
            &["invocations", "--slow", "--artifact", "g:a"],
            &["--timeout", "0", "status"],
            &["completion", "tcsh"],
        ] {
            let error = parse(bad).err().unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn help_is_there_for_every_verb() {
        for verb in [
            "status",
            "kv",
            "blueprint",
            "events",
            "log-level",
            "config",
            "completion",
            "topics",
            "publish",
            "dead-letters",
            "rollout",
            "scale",
            "controller",
        ] {
            let help = parse(&[verb, "--help"]).err().unwrap();
            assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp, "{verb}");
            assert_eq!(help.exit_code(), 0);
        }
        let help = parse(&["help", "kv", "put"]).err().unwrap();
        assert!(help.to_string().contains("--if-version"), "{help}");
    }

    #[test]
    fn a_rollout_takes_artifact_version_pairs_and_repeated_stages() {
        let cli = parse(&[
            "rollout",
            "start",
            "g:orders",
            "2.0.0",
            "g:inventory",
            "1.1.0",
            "--stage",
            "5:1000",
            "--stage",
            "100",
            "--auto",
            "--strategy",
            "canary",
            "--max-error-rate",
            "0.05",
        ])
        .unwrap();
        let Some(Verb::Rollout(RolloutVerb::Start(start))) = cli.verb else { panic!("{:?}", cli.verb) };
        assert_eq!(start.pairs, ["g:orders", "2.0.0", "g:inventory", "1.1.0"]);
        assert_eq!(start.stages, [(5, 1000), (100, 0)]);
        assert!(start.auto && !start.manual);
        assert_eq!((start.strategy.as_deref(), start.max_error_rate), (Some("canary"), Some(0.05)));
        let cli = parse(&["rollout", "ratio", "orders-2.0.0", "1", "3"]).unwrap();
        assert!(
            matches!(cli.verb, Some(Verb::Rollout(RolloutVerb::Ratio { ref id, new: 1, old: 3 })) if id == "orders-2.0.0")
        );
        let cli = parse(&["rollout", "rollback", "x", "--reason", "errors up"]).unwrap();
        assert!(matches!(cli.verb, Some(Verb::Rollout(RolloutVerb::Rollback { ref reason, .. }))
            if reason.as_deref() == Some("errors up")));
        for bad in [
            &["rollout", "start", "g:a"][..],
            &["rollout", "start", "g:a", "2.0.0", "--stage", "101:5"],
            &["rollout", "start", "g:a", "2.0.0", "--stage", "5:soon"],
            &["rollout", "start", "g:a", "2.0.0", "--auto", "--manual"],
            &["rollout", "start", "g:a", "2.0.0", "--strategy", "big-bang"],
            &["rollout", "ratio", "x", "1"],
            &["rollout", "promote"],
        ] {
            let error = parse(bad).err().unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn values_may_start_with_a_hyphen() {
        let cli = parse(&["kv", "put", "user/a", "-5", "--json"]).unwrap();
        assert!(matches!(cli.verb, Some(Verb::Kv(KvVerb::Put { ref value, .. })) if value.as_deref() == Some("-5")));
        assert!(cli.global.json);
    }

    #[test]
    fn per_node_config_names_the_node_by_id() {
        let cli = parse(&["config", "set", "heartbeat_ms", "200", "--node-id", "node-2"]).unwrap();
        assert!(
            matches!(cli.verb, Some(Verb::Config(ConfigVerb::Set { ref node_id, .. })) if node_id.as_deref() == Some("node-2"))
        );
    }
}
