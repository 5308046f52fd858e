//! Which scope and quota a calling artifact's state has, read on the event loop from the replicated store.
//!
//! The scope is `data/{blueprint}/{group:artifact}/` where `blueprint` is the owner named in the artifact's
//! target record (`targets/{artifact}`): one record per deployed artifact, written by the leader from the
//! blueprints, the same on every node. Versions of one artifact base deployed by the same blueprint share a
//! scope; the same base deployed by two blueprints has two. The quota is the target config's `[slices.kv]`
//! limits ([`SliceQuota::from_config`]). Invariant: nothing here reads anything the slice sent but the
//! (container-given) artifact.

use control::blueprint::quota::SliceQuota;
use control::records::{Record, TargetRecord};
use kvstore::{AetherKey, Artifact, DataScope, Store};
use mgmt::ApiError;

/// The scope and quota of `artifact`'s state, or why it has none (503: nothing was submitted).
pub fn resolve(store: &Store, artifact: &Artifact) -> Result<(DataScope, SliceQuota), ApiError> {
    let key = AetherKey::Target { artifact: artifact.clone() };
    let Some(entry) = store.get(&key) else {
        return Err(ApiError::unavailable(format!(
            "{artifact} is not deployed by any blueprint (no target record), so it has no state"
        )));
    };
    let target = TargetRecord::decode(entry.value())
        .map_err(|e| ApiError::unavailable(format!("the target record of {artifact} is unreadable: {e}")))?;
    let quota = SliceQuota::from_config(&target.config);
    Ok((DataScope::new(target.blueprint, artifact.base().clone()), quota))
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::cluster::StartFailures;
    use kvstore::{Command, Name};
    use serde_json::{Map, Value};

    fn artifact(s: &str) -> Artifact {
        Artifact::parse(s).unwrap()
    }

    fn deploy(store: &mut Store, slot: u64, blueprint: &str, artifact_text: &str, config: Map<String, Value>) {
        let record = TargetRecord {
            blueprint: Name::parse(blueprint).unwrap(),
            instances: 1,
            min_instances: 1,
            min_available: 1,
            max_instances: 1,
            autoscale: false,
            max_per_node: 1,
            retiring: false,
            depends_on: Vec::new(),
            config,
            failures: StartFailures::default(),
        };
        let put = Command::Put { key: AetherKey::Target { artifact: artifact(artifact_text) }, value: record.encode() };
        store.apply(slot, [put.encode().unwrap()]).unwrap();
    }

    #[test]
    fn the_scope_is_the_owning_blueprint_and_the_artifact_base_whatever_the_version() {
        let mut store = Store::default();
        deploy(&mut store, 1, "shop", "org.example:cart:1.0.0", Map::new());
        deploy(&mut store, 2, "shop", "org.example:cart:2.0.0", Map::new());
        deploy(&mut store, 3, "other", "org.example:pay:1.0.0", Map::new());
        let (v1, quota) = resolve(&store, &artifact("org.example:cart:1.0.0")).unwrap();
        let (v2, _) = resolve(&store, &artifact("org.example:cart:2.0.0")).unwrap();
        let (pay, _) = resolve(&store, &artifact("org.example:pay:1.0.0")).unwrap();
        assert_eq!(v1.prefix(), "data/shop/org.example:cart/");
        assert_eq!(v1, v2, "v2 sees v1's data");
        assert_eq!(pay.prefix(), "data/other/org.example:pay/");
        assert_eq!(quota, SliceQuota::default());
    }

    #[test]
    fn the_quota_comes_from_the_target_config() {
        let mut store = Store::default();
        let mut config = Map::new();
        config.insert(control::blueprint::quota::MAX_KEYS_KEY.into(), Value::from(3));
        config.insert(control::blueprint::quota::MAX_BYTES_KEY.into(), Value::from(100));
        deploy(&mut store, 1, "shop", "org.example:cart:1.0.0", config);
        let (_, quota) = resolve(&store, &artifact("org.example:cart:1.0.0")).unwrap();
        assert_eq!(quota, SliceQuota { max_keys: 3, max_bytes: 100 });
    }

    #[test]
    fn an_artifact_without_a_target_has_no_state() {
        let mut store = Store::default();
        deploy(&mut store, 1, "shop", "org.example:cart:1.0.0", Map::new());
        let err = resolve(&store, &artifact("org.example:cart:3.0.0")).unwrap_err();
        assert_eq!(err.status, 503);
        assert!(err.detail.contains("not deployed"), "{}", err.detail);
        let junk = Command::Put { key: AetherKey::Target { artifact: artifact("g:a:1.0.0") }, value: b"{".to_vec() };
        store.apply(2, [junk.encode().unwrap()]).unwrap();
        assert_eq!(resolve(&store, &artifact("g:a:1.0.0")).unwrap_err().status, 503);
    }
}
