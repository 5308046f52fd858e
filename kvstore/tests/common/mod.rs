//! Generators shared by the property tests: valid keys of every namespace, commands and command batches.

#![allow(dead_code)]

use kvstore::{
    AetherKey, Artifact, ArtifactBase, Command, DataPath, HttpMethod, Name, NodeId, Revision, RoutePath, SemVer,
    UserPath,
};
use proptest::prelude::*;

pub fn node() -> impl Strategy<Value = NodeId> {
    "[A-Za-z0-9_-][A-Za-z0-9._-]{0,15}".prop_map(|s| NodeId::parse(&s).unwrap())
}

pub fn name() -> impl Strategy<Value = Name> {
    "[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,20}".prop_map(|s| Name::parse(&s).unwrap())
}

fn pre_release() -> impl Strategy<Value = Option<String>> {
    let ident = prop_oneof!["[a-z][a-z0-9-]{0,5}", "(0|[1-9][0-9]{0,3})"];
    proptest::option::of(proptest::collection::vec(ident, 1..4).prop_map(|idents| idents.join(".")))
}

pub fn semver() -> impl Strategy<Value = SemVer> {
    (0..1000u64, 0..1000u64, any::<u64>(), pre_release()).prop_map(|(major, minor, patch, pre)| {
        let text = match pre {
            Some(pre) => format!("{major}.{minor}.{patch}-{pre}"),
            None => format!("{major}.{minor}.{patch}"),
        };
        SemVer::parse(&text).unwrap()
    })
}

pub fn artifact_base() -> impl Strategy<Value = ArtifactBase> {
    ("[a-z][a-z0-9_-]{0,5}(\\.[a-z0-9_-]{1,5}){0,2}", "[a-z][a-z0-9_-]{0,12}")
        .prop_map(|(group, artifact)| ArtifactBase::parse(&format!("{group}:{artifact}")).unwrap())
}

pub fn artifact() -> impl Strategy<Value = Artifact> {
    (artifact_base(), semver()).prop_map(|(base, version)| base.with_version(version))
}

pub fn route_path() -> impl Strategy<Value = RoutePath> {
    proptest::collection::vec("[a-z0-9{}_~@:-][a-z0-9{}._~@:-]{0,8}", 0..5)
        .prop_map(|segments| RoutePath::parse(&format!("/{}", segments.join("/"))).unwrap())
}

pub fn user_path() -> impl Strategy<Value = UserPath> {
    proptest::collection::vec("[a-z0-9_:-][a-z0-9._:-]{0,10}", 1..5)
        .prop_map(|segments| UserPath::parse(&segments.join("/")).unwrap())
}

pub fn data_path() -> impl Strategy<Value = DataPath> {
    proptest::collection::vec("[a-z0-9_:-][a-z0-9._:-]{0,10}", 1..5)
        .prop_map(|segments| DataPath::parse(&segments.join("/")).unwrap())
}

pub fn http_method() -> impl Strategy<Value = HttpMethod> {
    proptest::sample::select(HttpMethod::ALL.to_vec())
}

/// Any valid key, every namespace equally likely.
pub fn key() -> impl Strategy<Value = AetherKey> + Clone {
    prop_oneof![
        name().prop_map(|name| AetherKey::Blueprint { name }),
        (node(), artifact()).prop_map(|(node, artifact)| AetherKey::Slice { node, artifact }),
        artifact().prop_map(|artifact| AetherKey::Target { artifact }),
        (artifact(), name(), node(), any::<u32>()).prop_map(|(artifact, method, node, instance)| {
            AetherKey::Endpoint { artifact, method, node, instance }
        }),
        (http_method(), route_path()).prop_map(|(method, path)| AetherKey::Route { method, path }),
        artifact_base().prop_map(|base| AetherKey::Versions { base }),
        artifact_base().prop_map(|base| AetherKey::Scale { base }),
        name().prop_map(|id| AetherKey::Update { id }),
        name().prop_map(|metric| AetherKey::Threshold { metric }),
        name().prop_map(|logger| AetherKey::LogLevel { logger }),
        name().prop_map(|section| AetherKey::Config { section }),
        (node(), name()).prop_map(|(node, section)| AetherKey::NodeConfig { node, section }),
        (name(), artifact_base(), name()).prop_map(|(topic, base, method)| AetherKey::TopicSubscription {
            topic,
            base,
            method
        }),
        (name(), name()).prop_map(|(topic, id)| AetherKey::Message { topic, id }),
        (name(), artifact_base(), name(), proptest::option::of(node()))
            .prop_map(|(topic, base, method, node)| { AetherKey::Cursor { topic, base, method, node } }),
        name().prop_map(|id| AetherKey::DeadLetter { id }),
        (artifact_base(), name()).prop_map(|(base, task)| AetherKey::Schedule { base, task }),
        artifact_base().prop_map(|base| AetherKey::SliceLease { base }),
        node().prop_map(|node| AetherKey::NodeLifecycle { node }),
        node().prop_map(|node| AetherKey::NodeLease { node }),
        Just(AetherKey::ClusterLeader),
        Just(AetherKey::ClusterMembers),
        name().prop_map(|id| AetherKey::Alert { id }),
        name().prop_map(|id| AetherKey::ApiKey { id }),
        user_path().prop_map(|path| AetherKey::User { path }),
        (name(), artifact_base(), data_path()).prop_map(|(blueprint, base, path)| AetherKey::Data {
            blueprint,
            base,
            path
        }),
    ]
}

/// Keys from a small set, so commands in one run collide and compare-and-set sometimes matches.
pub fn colliding_key() -> impl Strategy<Value = AetherKey> + Clone {
    proptest::sample::select(vec![
        "user/a",
        "user/b",
        "user/a/x",
        "routes/GET/",
        "slices/n1/g:a:1.0.0",
        "data/s/g:a/k",
        "data/s/g:a/k/2",
        "data/t/g:a/k",
    ])
    .prop_map(|s| AetherKey::parse(s).unwrap())
}

fn revision() -> impl Strategy<Value = Revision> {
    (0..20u64).prop_map(Revision)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..32)
}

pub fn command_on(keys: impl Strategy<Value = AetherKey> + Clone) -> impl Strategy<Value = Command> {
    prop_oneof![
        (keys.clone(), value()).prop_map(|(key, value)| Command::Put { key, value }),
        keys.clone().prop_map(|key| Command::Remove { key }),
        (keys.clone(), proptest::option::of(revision()), value())
            .prop_map(|(key, expected, value)| Command::CompareAndSet { key, expected, value }),
        (keys, revision()).prop_map(|(key, expected)| Command::CompareAndRemove { key, expected }),
    ]
}

/// Quota-bounded writes to a few `data/` keys of two scopes, with small limits so that some are refused.
pub fn bounded_command() -> impl Strategy<Value = Command> {
    let keys = proptest::sample::select(vec!["data/s/g:a/k", "data/s/g:a/k/2", "data/s/g:a/l", "data/t/g:a/k"])
        .prop_map(|s| AetherKey::parse(s).unwrap());
    (command_on(keys), 0..4u64, 0..80u64).prop_map(|(write, max_keys, max_bytes)| Command::Bounded {
        max_keys,
        max_bytes,
        write: Box::new(write),
    })
}

/// Batches of encoded payloads, with an occasional malformed one.
pub fn batches() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
    let payload = prop_oneof![
        9 => command_on(colliding_key()).prop_map(|c| c.encode().unwrap()),
        2 => bounded_command().prop_map(|c| c.encode().unwrap()),
        1 => proptest::collection::vec(any::<u8>(), 0..16),
    ];
    proptest::collection::vec(proptest::collection::vec(payload, 0..8), 0..12)
}
