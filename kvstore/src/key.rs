//! [`AetherKey`]: every key of the control plane, typed, with one canonical string form.
//!
//! Key forms (`{artifact}` is `group:artifact:version`, `{artifact-base}` is `group:artifact`):
//!
//! | key | meaning |
//! | --- | --- |
//! | `blueprints/{name}` | a deployed blueprint |
//! | `slices/{node}/{artifact}` | state of one slice on one node |
//! | `targets/{artifact}` | desired instances of a slice |
//! | `endpoints/{artifact}/{method}/{node}:{instance}` | a live slice method instance |
//! | `routes/{METHOD}/{path}` | an HTTP route; see below for `{path}` |
//! | `versions/{artifact-base}` | reserved (a rollout's split is in its `updates/` record) |
//! | `updates/{id}` | a rollout: versions moved, traffic ratio, stages, state |
//! | `thresholds/{metric}` | a scaling or alert threshold |
//! | `loglevels/{logger}` | a run-time log level (`{logger}` a module path such as `consensus::replica`, or `default`) |
//! | `config/{section}` | a cluster-wide configuration value (a live node setting) |
//! | `config/nodes/{node}/{section}` | the same setting for one node, over the cluster-wide value |
//! | `topics/{topic}/{artifact-base}/{method}` | a slice's subscription to a topic (its delivery mode) |
//! | `messages/{topic}/{id}` | one published message, retained until delivered and past its retention; its order is its version |
//! | `cursors/{topic}/{artifact-base}/{method}` | how far a competing subscription has delivered |
//! | `cursors/{topic}/{artifact-base}/{method}/{node}` | how far a broadcast subscription has delivered to the instance on `node` |
//! | `deadletters/{id}` | a message a subscriber failed to take after its retries |
//! | `schedules/{artifact-base}/{task}` | a scheduled task, its last run and its state |
//! | `leases/{artifact-base}` | the lease of a single-active slice: holder and epoch |
//! | `scaling/{artifact-base}` | the instance count the scaling controller or an operator set for a slice |
//! | `nodes/{node}/lifecycle` | a node's lifecycle state |
//! | `nodes/{node}/lease` | a node's liveness lease, renewed by the node through consensus |
//! | `nodes/leader` | which node leads the control plane |
//! | `nodes/members` | the cluster's members: each node's id, consensus replica id, cluster address and role |
//! | `alerts/{id}` | an alert |
//! | `keys/{id}` | a management API key: name, role and keyed hash, never the key itself |
//! | `user/{segment}(/{segment})*` | free-form operator keys |
//! | `data/{blueprint}/{artifact-base}/{segment}(/{segment})*` | a slice's own data (`ctx.kv()`); see [`crate::data`] |
//!
//! Routes: the key holds the HTTP path without its leading `/`, so the route `GET /echo/{msg}` is the key
//! `routes/GET/echo/{msg}` and the root route `GET /` is `routes/GET/`. `routes/GET//echo/{msg}` is rejected
//! (empty path segment) rather than read as a second spelling of the same route.
//!
//! The `user/` namespace is the only one without a schema. The management API's generic `PUT /api/kv/{key}`
//! should write there only: typed namespaces are owned by the components that validate their values.
//! [`AetherKey::is_user`] is the check. `data/` keys are written only by the slices they belong to, through
//! the node (quota-bounded writes, [`crate::Command::Bounded`]).
//!
//! Invariant: the parser accepts canonical spellings only, so `print(parse(s)) == s` for every `s` that parses,
//! and `parse(print(k)) == k` for every key. Keys order and prefix-match by this string form.

use crate::data::DataPath;
use crate::error::ParseError;
use crate::route::{HttpMethod, RoutePath};
use std::fmt;
use std::str::FromStr;
use vocab::name::{check_segment, is_name_char, Name, NodeId, NAME_BYTES_MAX};
use vocab::{Artifact, ArtifactBase};

/// Longest key in its string form, in bytes.
pub const KEY_BYTES_MAX: usize = 1024;

/// The first segment of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Namespace {
    Blueprints,
    Slices,
    Targets,
    Endpoints,
    Routes,
    Versions,
    Updates,
    Thresholds,
    LogLevels,
    Config,
    Topics,
    Schedules,
    Nodes,
    Alerts,
    Keys,
    User,
    Data,
    Artifacts,
    Messages,
    Cursors,
    DeadLetters,
    Leases,
    Scaling,
}

impl Namespace {
    pub const ALL: [Namespace; 23] = [
        Namespace::Blueprints,
        Namespace::Slices,
        Namespace::Targets,
        Namespace::Endpoints,
        Namespace::Routes,
        Namespace::Versions,
        Namespace::Updates,
        Namespace::Thresholds,
        Namespace::LogLevels,
        Namespace::Config,
        Namespace::Topics,
        Namespace::Schedules,
        Namespace::Nodes,
        Namespace::Alerts,
        Namespace::Keys,
        Namespace::User,
        Namespace::Data,
        Namespace::Artifacts,
        Namespace::Messages,
        Namespace::Cursors,
        Namespace::DeadLetters,
        Namespace::Leases,
        Namespace::Scaling,
    ];

    /// The prefix every key of this namespace starts with (`"slices/"`), for [`crate::Store::list`] and watches.
    pub fn prefix(self) -> &'static str {
        match self {
            Namespace::Blueprints => "blueprints/",
            Namespace::Slices => "slices/",
            Namespace::Targets => "targets/",
            Namespace::Endpoints => "endpoints/",
            Namespace::Routes => "routes/",
            Namespace::Versions => "versions/",
            Namespace::Updates => "updates/",
            Namespace::Thresholds => "thresholds/",
            Namespace::LogLevels => "loglevels/",
            Namespace::Config => "config/",
            Namespace::Topics => "topics/",
            Namespace::Schedules => "schedules/",
            Namespace::Nodes => "nodes/",
            Namespace::Alerts => "alerts/",
            Namespace::Keys => "keys/",
            Namespace::User => "user/",
            Namespace::Data => "data/",
            Namespace::Artifacts => "artifacts/",
            Namespace::Messages => "messages/",
            Namespace::Cursors => "cursors/",
            Namespace::DeadLetters => "deadletters/",
            Namespace::Leases => "leases/",
            Namespace::Scaling => "scaling/",
        }
    }

    /// The namespace's segment, without the `/`.
    pub fn word(self) -> &'static str {
        self.prefix().trim_end_matches('/')
    }

    fn from_word(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|ns| ns.word() == word)
    }
}

/// The free-form part of a `user/` key: one or more `/`-separated segments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserPath(String);

impl UserPath {
    /// Longest user path, so that `user/{path}` fits [`KEY_BYTES_MAX`].
    pub const BYTES_MAX: usize = KEY_BYTES_MAX - "user/".len();

    pub fn parse(input: &str) -> Result<Self, ParseError> {
        if input.len() > Self::BYTES_MAX {
            let reason = format!("is {} bytes, over the limit of {}", input.len(), Self::BYTES_MAX);
            return Err(ParseError::new(input, "user key", reason));
        }
        for segment in input.split('/') {
            check_segment(segment, "user key segment", NAME_BYTES_MAX, is_name_char).map_err(|e| e.within(input))?;
        }
        Ok(UserPath(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A typed control-plane key. See the module documentation for the string forms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AetherKey {
    Blueprint {
        name: Name,
    },
    Slice {
        node: NodeId,
        artifact: Artifact,
    },
    Target {
        artifact: Artifact,
    },
    /// `artifacts/{artifact}`: the repository's catalog entry for one uploaded version (its bytes live in
    /// the DHT).
    ArtifactEntry {
        artifact: Artifact,
    },
    Endpoint {
        artifact: Artifact,
        method: Name,
        node: NodeId,
        instance: u32,
    },
    Route {
        method: HttpMethod,
        path: RoutePath,
    },
    Versions {
        base: ArtifactBase,
    },
    Update {
        id: Name,
    },
    Threshold {
        metric: Name,
    },
    LogLevel {
        logger: Name,
    },
    Config {
        section: Name,
    },
    NodeConfig {
        node: NodeId,
        section: Name,
    },
    /// `topics/{topic}/{base}/{method}`: the slice `base` takes `topic`'s messages with `method`.
    TopicSubscription {
        topic: Name,
        base: ArtifactBase,
        method: Name,
    },
    /// `messages/{topic}/{id}`: one retained message; messages of a topic order by their versions.
    Message {
        topic: Name,
        id: Name,
    },
    /// `cursors/{topic}/{base}/{method}[/{node}]`: delivery progress of one subscription, for the whole
    /// slice (competing, `node` is `None`) or for its instance on `node` (broadcast).
    Cursor {
        topic: Name,
        base: ArtifactBase,
        method: Name,
        node: Option<NodeId>,
    },
    /// `deadletters/{id}`: a message its subscriber failed to take.
    DeadLetter {
        id: Name,
    },
    /// `schedules/{base}/{task}`: a task of slice `base`.
    Schedule {
        base: ArtifactBase,
        task: Name,
    },
    /// `leases/{base}`: which instance of the single-active slice `base` serves, and its epoch.
    /// `scaling/{artifact-base}`: the instance count the controller or an operator set for a slice, over the
    /// blueprint's.
    Scale {
        base: ArtifactBase,
    },
    SliceLease {
        base: ArtifactBase,
    },
    NodeLifecycle {
        node: NodeId,
    },
    NodeLease {
        node: NodeId,
    },
    ClusterLeader,
    /// `nodes/members`: the membership roster, written only through consensus reconfigurations.
    ClusterMembers,
    Alert {
        id: Name,
    },
    ApiKey {
        id: Name,
    },
    User {
        path: UserPath,
    },
    /// A slice's own data: `path` inside the scope of `blueprint` and `base` ([`crate::DataScope`]).
    Data {
        blueprint: Name,
        base: ArtifactBase,
        path: DataPath,
    },
}

impl AetherKey {
    /// Parses a key in its canonical string form.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        if input.len() > KEY_BYTES_MAX {
            let reason = format!("is {} bytes, over the limit of {KEY_BYTES_MAX}", input.len());
            return Err(ParseError::new(input, "key", reason));
        }
        let Some((word, rest)) = input.split_once('/') else {
            return Err(ParseError::new(input, "key", "expected {namespace}/..."));
        };
        let Some(namespace) = Namespace::from_word(word) else {
            return Err(unknown_namespace(input));
        };
        parse_in(namespace, rest).map_err(|e| e.within(input))
    }

    pub fn namespace(&self) -> Namespace {
        match self {
            AetherKey::Blueprint { .. } => Namespace::Blueprints,
            AetherKey::Slice { .. } => Namespace::Slices,
            AetherKey::Target { .. } => Namespace::Targets,
            AetherKey::ArtifactEntry { .. } => Namespace::Artifacts,
            AetherKey::Endpoint { .. } => Namespace::Endpoints,
            AetherKey::Route { .. } => Namespace::Routes,
            AetherKey::Versions { .. } => Namespace::Versions,
            AetherKey::Update { .. } => Namespace::Updates,
            AetherKey::Threshold { .. } => Namespace::Thresholds,
            AetherKey::LogLevel { .. } => Namespace::LogLevels,
            AetherKey::Config { .. } | AetherKey::NodeConfig { .. } => Namespace::Config,
            AetherKey::TopicSubscription { .. } => Namespace::Topics,
            AetherKey::Message { .. } => Namespace::Messages,
            AetherKey::Cursor { .. } => Namespace::Cursors,
            AetherKey::DeadLetter { .. } => Namespace::DeadLetters,
            AetherKey::Schedule { .. } => Namespace::Schedules,
            AetherKey::SliceLease { .. } => Namespace::Leases,
            AetherKey::Scale { .. } => Namespace::Scaling,
            AetherKey::NodeLifecycle { .. }
            | AetherKey::NodeLease { .. }
            | AetherKey::ClusterLeader
            | AetherKey::ClusterMembers => Namespace::Nodes,
            AetherKey::Alert { .. } => Namespace::Alerts,
            AetherKey::ApiKey { .. } => Namespace::Keys,
            AetherKey::User { .. } => Namespace::User,
            AetherKey::Data { .. } => Namespace::Data,
        }
    }

    /// True for free-form `user/` keys, the only ones the generic management API should write.
    pub fn is_user(&self) -> bool {
        self.namespace() == Namespace::User
    }

    /// Prefix of every slice state key of `node`: `slices/{node}/`.
    pub fn slices_on_prefix(node: &NodeId) -> String {
        format!("slices/{node}/")
    }

    /// Prefix of every endpoint of `artifact`: `endpoints/{artifact}/`.
    pub fn endpoints_of_prefix(artifact: &Artifact) -> String {
        format!("endpoints/{artifact}/")
    }

    /// Prefix of every subscription to `topic`: `topics/{topic}/`.
    pub fn subscribers_of_prefix(topic: &Name) -> String {
        format!("topics/{topic}/")
    }

    /// Prefix of every retained message of `topic`: `messages/{topic}/`.
    pub fn messages_of_prefix(topic: &Name) -> String {
        format!("messages/{topic}/")
    }

    /// Prefix of every cursor of `topic`: `cursors/{topic}/`.
    pub fn cursors_of_prefix(topic: &Name) -> String {
        format!("cursors/{topic}/")
    }
}

fn unknown_namespace(input: &str) -> ParseError {
    let words: Vec<_> = Namespace::ALL.iter().map(|ns| ns.word()).collect();
    let reason = format!("unknown namespace; expected one of {}", words.join(", "));
    ParseError::new(input, "namespace", reason)
}

fn parse_in(namespace: Namespace, rest: &str) -> Result<AetherKey, ParseError> {
    let key = match namespace {
        Namespace::Blueprints => AetherKey::Blueprint { name: one_name(rest, "blueprint name")? },
        Namespace::Slices => parse_slice(rest)?,
        Namespace::Targets => AetherKey::Target { artifact: Artifact::parse(one(rest, "{artifact}")?)? },
        Namespace::Artifacts => AetherKey::ArtifactEntry { artifact: Artifact::parse(one(rest, "{artifact}")?)? },
        Namespace::Endpoints => parse_endpoint(rest)?,
        Namespace::Routes => parse_route(rest)?,
        Namespace::Versions => AetherKey::Versions { base: ArtifactBase::parse(one(rest, "{group}:{artifact}")?)? },
        Namespace::Updates => AetherKey::Update { id: one_name(rest, "update id")? },
        Namespace::Thresholds => AetherKey::Threshold { metric: one_name(rest, "metric")? },
        Namespace::LogLevels => AetherKey::LogLevel { logger: one_name(rest, "logger")? },
        Namespace::Config => parse_config(rest)?,
        Namespace::Topics => parse_topic_subscription(rest)?,
        Namespace::Schedules => {
            let [base, task] = segments(rest, "{group}:{artifact}/{task}")?;
            AetherKey::Schedule { base: ArtifactBase::parse(base)?, task: Name::parse_as(task, "task")? }
        }
        Namespace::Messages => {
            let [topic, id] = segments(rest, "{topic}/{id}")?;
            AetherKey::Message { topic: Name::parse_as(topic, "topic")?, id: Name::parse_as(id, "message id")? }
        }
        Namespace::Cursors => parse_cursor(rest)?,
        Namespace::DeadLetters => AetherKey::DeadLetter { id: one_name(rest, "dead letter id")? },
        Namespace::Leases => AetherKey::SliceLease { base: ArtifactBase::parse(one(rest, "{group}:{artifact}")?)? },
        Namespace::Scaling => AetherKey::Scale { base: ArtifactBase::parse(one(rest, "{group}:{artifact}")?)? },
        Namespace::Nodes => parse_node_key(rest)?,
        Namespace::Alerts => AetherKey::Alert { id: one_name(rest, "alert id")? },
        Namespace::Keys => AetherKey::ApiKey { id: one_name(rest, "key id")? },
        Namespace::User => AetherKey::User { path: UserPath::parse(rest)? },
        Namespace::Data => crate::data::parse_data_key(rest)?,
    };
    Ok(key)
}

/// Splits `rest` into exactly `N` segments; `shape` describes them for the error (`"{node}/{artifact}"`).
fn segments<'a, const N: usize>(rest: &'a str, shape: &str) -> Result<[&'a str; N], ParseError> {
    let parts: Vec<&str> = rest.split('/').collect();
    parts.try_into().map_err(|parts: Vec<&str>| {
        let reason = format!("expected {shape}, found {} segment(s)", parts.len());
        ParseError::new(rest, "key shape", reason)
    })
}

fn one<'a>(rest: &'a str, shape: &str) -> Result<&'a str, ParseError> {
    let [only] = segments::<1>(rest, shape)?;
    Ok(only)
}

fn one_name(rest: &str, part: &'static str) -> Result<Name, ParseError> {
    Name::parse_as(one(rest, &format!("{{{}}}", part.replace(' ', "-")))?, part)
}

fn parse_config(rest: &str) -> Result<AetherKey, ParseError> {
    let Some(per_node) = rest.strip_prefix("nodes/") else {
        return Ok(AetherKey::Config { section: one_name(rest, "config section")? });
    };
    let [node, section] = segments(per_node, "nodes/{node}/{section}")?;
    Ok(AetherKey::NodeConfig { node: NodeId::parse(node)?, section: Name::parse_as(section, "config section")? })
}

fn parse_slice(rest: &str) -> Result<AetherKey, ParseError> {
    let [node, artifact] = segments(rest, "{node}/{artifact}")?;
    Ok(AetherKey::Slice { node: NodeId::parse(node)?, artifact: Artifact::parse(artifact)? })
}

fn parse_endpoint(rest: &str) -> Result<AetherKey, ParseError> {
    let [artifact, method, node_instance] = segments(rest, "{artifact}/{method}/{node}:{instance}")?;
    let Some((node, instance)) = node_instance.rsplit_once(':') else {
        return Err(ParseError::new(node_instance, "endpoint instance", "expected {node}:{instance}"));
    };
    Ok(AetherKey::Endpoint {
        artifact: Artifact::parse(artifact)?,
        method: Name::parse_as(method, "slice method")?,
        node: NodeId::parse(node)?,
        instance: parse_instance(instance)?,
    })
}

/// A decimal `u32` without leading zeros, so the key has one spelling.
fn parse_instance(input: &str) -> Result<u32, ParseError> {
    let digits_only = !input.is_empty() && input.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (input.len() > 1 && input.starts_with('0')) {
        let reason = "expected a decimal number without leading zeros";
        return Err(ParseError::new(input, "endpoint instance", reason));
    }
    input.parse().map_err(|_| ParseError::new(input, "endpoint instance", "number too large"))
}

fn parse_route(rest: &str) -> Result<AetherKey, ParseError> {
    let Some((method, path)) = rest.split_once('/') else {
        return Err(ParseError::new(rest, "key shape", "expected {METHOD}/{path}"));
    };
    let method = HttpMethod::parse(method)?;
    Ok(AetherKey::Route { method, path: RoutePath::parse_relative(path)? })
}

fn parse_topic_subscription(rest: &str) -> Result<AetherKey, ParseError> {
    let [topic, base, method] = segments(rest, "{topic}/{group}:{artifact}/{method}")?;
    Ok(AetherKey::TopicSubscription {
        topic: Name::parse_as(topic, "topic")?,
        base: ArtifactBase::parse(base)?,
        method: Name::parse_as(method, "slice method")?,
    })
}

fn parse_cursor(rest: &str) -> Result<AetherKey, ParseError> {
    let parts: Vec<&str> = rest.split('/').collect();
    let (topic, base, method, node) = match parts.as_slice() {
        [topic, base, method] => (topic, base, method, None),
        [topic, base, method, node] => (topic, base, method, Some(NodeId::parse(node)?)),
        _ => {
            let reason = format!(
                "expected {{topic}}/{{group}}:{{artifact}}/{{method}}[/{{node}}], found {} segment(s)",
                parts.len()
            );
            return Err(ParseError::new(rest, "key shape", reason));
        }
    };
    Ok(AetherKey::Cursor {
        topic: Name::parse_as(topic, "topic")?,
        base: ArtifactBase::parse(base)?,
        method: Name::parse_as(method, "slice method")?,
        node,
    })
}

fn parse_node_key(rest: &str) -> Result<AetherKey, ParseError> {
    if rest == "leader" {
        return Ok(AetherKey::ClusterLeader);
    }
    if rest == "members" {
        return Ok(AetherKey::ClusterMembers);
    }
    let [node, suffix] = segments(rest, "{node}/lifecycle")?;
    let node = NodeId::parse(node)?;
    match suffix {
        "lifecycle" => Ok(AetherKey::NodeLifecycle { node }),
        "lease" => Ok(AetherKey::NodeLease { node }),
        _ => Err(ParseError::new(
            suffix,
            "key shape",
            "expected nodes/{node}/lifecycle, nodes/{node}/lease or nodes/leader",
        )),
    }
}

impl fmt::Display for AetherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.namespace().word();
        match self {
            AetherKey::Blueprint { name } => write!(f, "{ns}/{name}"),
            AetherKey::Slice { node, artifact } => write!(f, "{ns}/{node}/{artifact}"),
            AetherKey::Target { artifact } => write!(f, "{ns}/{artifact}"),
            AetherKey::ArtifactEntry { artifact } => write!(f, "{ns}/{artifact}"),
            AetherKey::Endpoint { artifact, method, node, instance } => {
                write!(f, "{ns}/{artifact}/{method}/{node}:{instance}")
            }
            AetherKey::Route { method, path } => write!(f, "{ns}/{method}/{}", path.relative()),
            AetherKey::Versions { base } => write!(f, "{ns}/{base}"),
            AetherKey::Update { id } => write!(f, "{ns}/{id}"),
            AetherKey::Threshold { metric } => write!(f, "{ns}/{metric}"),
            AetherKey::LogLevel { logger } => write!(f, "{ns}/{logger}"),
            AetherKey::Config { section } => write!(f, "{ns}/{section}"),
            AetherKey::NodeConfig { node, section } => write!(f, "{ns}/nodes/{node}/{section}"),
            AetherKey::TopicSubscription { topic, base, method } => write!(f, "{ns}/{topic}/{base}/{method}"),
            AetherKey::Message { topic, id } => write!(f, "{ns}/{topic}/{id}"),
            AetherKey::Cursor { topic, base, method, node: None } => write!(f, "{ns}/{topic}/{base}/{method}"),
            AetherKey::Cursor { topic, base, method, node: Some(node) } => {
                write!(f, "{ns}/{topic}/{base}/{method}/{node}")
            }
            AetherKey::DeadLetter { id } => write!(f, "{ns}/{id}"),
            AetherKey::Schedule { base, task } => write!(f, "{ns}/{base}/{task}"),
            AetherKey::SliceLease { base } | AetherKey::Scale { base } => write!(f, "{ns}/{base}"),
            AetherKey::NodeLifecycle { node } => write!(f, "{ns}/{node}/lifecycle"),
            AetherKey::NodeLease { node } => write!(f, "{ns}/{node}/lease"),
            AetherKey::ClusterLeader => write!(f, "{ns}/leader"),
            AetherKey::ClusterMembers => write!(f, "{ns}/members"),
            AetherKey::Alert { id } | AetherKey::ApiKey { id } => write!(f, "{ns}/{id}"),
            AetherKey::User { path } => write!(f, "{ns}/{}", path.as_str()),
            AetherKey::Data { blueprint, base, path } => write!(f, "{ns}/{blueprint}/{base}/{}", path.as_str()),
        }
    }
}

impl FromStr for AetherKey {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLES: [&str; 30] = [
        "blueprints/shop",
        "slices/node-1/org.example:echo:1.0.0",
        "targets/org.example:echo:1.0.0-rc.1",
        "endpoints/org.example:echo:1.0.0/echo/node-2:0",
        "routes/GET/echo/{msg}",
        "routes/GET/",
        "versions/org.example:echo",
        "updates/u-42",
        "thresholds/cpu.load",
        "loglevels/invoke::routes",
        "config/http",
        "topics/orders/org.example:billing/on-order",
        "messages/orders/n1-5f3a-17",
        "cursors/orders/org.example:billing/on-order",
        "cursors/orders/org.example:billing/on-order/node-2",
        "deadletters/orders-n1-5f3a-17-billing",
        "schedules/org.example:reports/nightly-report",
        "leases/org.example:ledger",
        "nodes/node-3/lifecycle",
        "nodes/node-3/lease",
        "nodes/leader",
        "nodes/members",
        "alerts/a1",
        "config/slow_call_ms",
        "config/nodes",
        "config/nodes/node-2/slow_call_ms",
        "loglevels/aetherd::app",
        "keys/3f9a0c1d2e4b5a69",
        "user/team/a/b.c",
        "data/shop/org.example:cart/users/alice",
    ];

    #[test]
    fn examples_round_trip() {
        for s in EXAMPLES {
            let key = AetherKey::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(key.to_string(), s);
        }
    }

    #[test]
    fn route_key_drops_the_leading_slash_of_the_path() {
        let key = AetherKey::parse("routes/POST/orders/{id}").unwrap();
        let AetherKey::Route { method, path } = key else { panic!("not a route: {key:?}") };
        assert_eq!((method, path.as_str()), (HttpMethod::Post, "/orders/{id}"));
    }

    #[test]
    fn doubled_slash_route_is_rejected_with_a_hint() {
        let err = AetherKey::parse("routes/GET//echo/{msg}").unwrap_err();
        assert_eq!(err.part, "route path");
        assert_eq!(err.input, "routes/GET//echo/{msg}");
        assert!(err.reason.contains("routes/GET/echo"), "{}", err.reason);
    }

    #[test]
    fn errors_name_the_wrong_part() {
        let cases = [
            ("nope/x", "namespace"),
            ("blueprints", "key"),
            ("blueprints/a/b", "key shape"),
            ("slices/no de/g:a:1.0.0", "node"),
            ("slices/n1/g:a:1.0", "version"),
            ("endpoints/g:a:1.0.0/m/n1", "endpoint instance"),
            ("endpoints/g:a:1.0.0/m/n1:01", "endpoint instance"),
            ("endpoints/g:a:1.0.0/m/n1:4294967296", "endpoint instance"),
            ("routes/get/x", "http method"),
            ("nodes/n1/state", "key shape"),
            ("config/nodes/n1", "key shape"),
            ("config/nodes/n:1/x", "node"),
            ("user/a//b", "user key segment"),
            ("user/", "user key segment"),
            ("keys/a/b", "key shape"),
            ("keys/", "key id"),
        ];
        for (input, part) in cases {
            let err = AetherKey::parse(input).unwrap_err();
            assert_eq!(err.part, part, "{input}: {err}");
            assert_eq!(err.input, input);
        }
    }

    #[test]
    fn oversized_keys_are_rejected_before_parsing() {
        let long = format!("user/{}", "a/".repeat(KEY_BYTES_MAX));
        assert_eq!(AetherKey::parse(&long).unwrap_err().part, "key");
    }

    #[test]
    fn the_longest_keys_of_every_bounded_part_fit_the_key_limit() {
        let artifact = format!(
            "{}:{}:{}.{}.{}-{}",
            "g".repeat(128),
            "a".repeat(128),
            u64::MAX,
            u64::MAX,
            u64::MAX,
            "p".repeat(64)
        );
        let endpoint = format!("endpoints/{artifact}/{}/{}:{}", "m".repeat(128), "n".repeat(64), u32::MAX);
        let route = format!("routes/OPTIONS/{}", "r".repeat(crate::route::ROUTE_PATH_BYTES_MAX - 1));
        let user = format!("user/{}", vec!["u".repeat(100); 10].join("/"));
        for key in [endpoint, route, user] {
            assert!(key.len() <= KEY_BYTES_MAX, "{} bytes", key.len());
            assert_eq!(AetherKey::parse(&key).map(|k| k.to_string()), Ok(key));
        }
    }

    #[test]
    fn user_paths_built_directly_are_bounded_too() {
        let too_long = vec!["u".repeat(100); 11].join("/");
        assert_eq!(UserPath::parse(&too_long).unwrap_err().part, "user key");
    }

    #[test]
    fn prefixes_end_with_a_slash_so_node_1_does_not_match_node_10() {
        let node = NodeId::parse("node-1").unwrap();
        let prefix = AetherKey::slices_on_prefix(&node);
        assert!("slices/node-1/g:a:1.0.0".starts_with(&prefix));
        assert!(!"slices/node-10/g:a:1.0.0".starts_with(&prefix));
    }

    #[test]
    fn only_user_keys_are_user_keys() {
        for s in EXAMPLES {
            let key = AetherKey::parse(s).unwrap();
            assert_eq!(key.is_user(), s.starts_with("user/"));
            assert!(s.starts_with(key.namespace().prefix()));
        }
    }
}
