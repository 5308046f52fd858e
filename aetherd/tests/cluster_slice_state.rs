//! Slice state (`ctx.kv()`'s node side) over real `aetherd` processes: a 3-node cluster, driven through each
//! node's slice state test port (`AETHER_SLICE_STATE_DEBUG`), which calls the same `NodeSliceState` a slice's
//! container calls, so every read and write goes through the event loop and consensus. There is no slice
//! instance: the artifacts are placeholders in the repository (enough for the blueprints, and so the target
//! records that name each artifact's scope, to exist), and watches deliver to the port's recorder.
//! `cluster_slice_kv.rs` proves the same scoping, quota, linearizability and watch order through real slices;
//! this port remains for what a slice cannot drive: an artifact with no scope yet, an unwatch, and the
//! exact deliveries (deletes included) to a chosen instance.

use devcluster::{free_ports, http, wait_for, ClusterSpec, LocalCluster};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);
const CART: &str = "org.example:cart:1.0.0";
const CART_V2: &str = "org.example:cart:2.0.0";
const PAY: &str = "org.example:pay:1.0.0";

struct Port(BufReader<TcpStream>);

impl Port {
    fn connect(addr: SocketAddr) -> Port {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Port(BufReader::new(stream))
    }

    fn ask(&mut self, request: Value) -> Value {
        self.0.get_mut().write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }
}

fn put(port: &mut Port, artifact: &str, key: &str, value: &str) -> Value {
    port.ask(json!({"op": "put", "artifact": artifact, "key": key, "value": value}))
}

fn get(port: &mut Port, artifact: &str, key: &str) -> Value {
    port.ask(json!({"op": "get", "artifact": artifact, "key": key}))
}

fn list(port: &mut Port, artifact: &str, prefix: &str) -> Value {
    port.ask(json!({"op": "list", "artifact": artifact, "prefix": prefix, "limit": 1000}))
}

fn version(answer: &Value) -> u64 {
    answer["ok"].as_u64().unwrap_or_else(|| panic!("not a write version: {answer}"))
}

/// A repository with placeholder files where the artifacts belong: blueprints naming them are accepted.
fn placeholder_repo(dir: &std::path::Path) -> PathBuf {
    let repo = dir.join("repo");
    for coords in [CART, CART_V2, PAY] {
        let path = repo.join(container::Artifact::parse(coords).unwrap().repository_path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"placeholder, not a library").unwrap();
    }
    repo
}

fn start(name: &str) -> (LocalCluster, Vec<SocketAddr>) {
    let dir = std::env::temp_dir().join(format!("aether-slicekv-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let repo = placeholder_repo(&dir);
    let mut spec = ClusterSpec::new(3, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")));
    spec.extra_args = vec!["--repo".into(), repo.display().to_string()];
    let mut c = LocalCluster::prepare(spec).unwrap();
    let ports: Vec<SocketAddr> = free_ports(3).into_iter().map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
    let base_env = c.spec.env.clone();
    for (i, port) in ports.iter().enumerate() {
        c.spec.env = base_env.clone();
        c.spec.env.push(("AETHER_SLICE_STATE_DEBUG".into(), port.to_string()));
        c.start_node(i).unwrap();
    }
    c.wait_ready(SETTLE).unwrap();
    (c, ports)
}

fn deploy(c: &LocalCluster, blueprint: &str) {
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", blueprint.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
}

/// Waits until `artifact` has a scope on every node (its target record is there).
fn wait_scoped(ports: &mut [Port], artifact: &str) {
    let ok = wait_for(SETTLE, || ports.iter_mut().all(|p| list(p, artifact, "").get("ok").is_some()));
    assert!(ok.is_ok(), "{artifact} got no scope: {}", list(&mut ports[0], artifact, ""));
}

fn mgmt_list(c: &LocalCluster, prefix: &str) -> Value {
    http(c.nodes[0].management, "GET", &format!("/api/kv?prefix={prefix}"), b"").unwrap().json()["entries"].clone()
}

#[test]
fn slice_state_is_scoped_bounded_linearizable_and_watched_in_order() {
    let (c, addrs) = start("main");
    let mut ports: Vec<Port> = addrs.iter().map(|a| Port::connect(*a)).collect();

    // Not deployed: no scope, nothing submitted.
    let refused = put(&mut ports[0], CART, "k", "v");
    assert_eq!(refused["error"]["kind"], "unavailable", "{refused}");

    deploy(&c, &format!("name = \"shop\"\n[[slices]]\nartifact = \"{CART}\"\n[slices.kv]\nmax_keys = 3\n"));
    deploy(&c, &format!("name = \"pay\"\n[[slices]]\nartifact = \"{PAY}\"\n"));
    wait_scoped(&mut ports, CART);
    wait_scoped(&mut ports, PAY);

    // A watch on node 3, registered before the writes it must see.
    let watch = json!({"op": "watch", "artifact": CART, "instance": 7, "prefix": "", "method": "changed"});
    assert_eq!(ports[2].ask(watch), json!({"ok": null}));

    // Writes from every node; reads from another node see them at once (linearizable).
    let mut written = Vec::new();
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        let v = version(&put(&mut ports[i], CART, key, &format!("{key}-1")));
        written.push(json!({"key": key, "version": v, "value": format!("{key}-1"), "deleted": false}));
        let read = get(&mut ports[(i + 1) % 3], CART, key);
        assert_eq!(read["ok"]["version"], v, "{read}");
    }

    // The quota (3 keys) is enforced at apply: a 4th key is refused and nothing changes.
    let before = list(&mut ports[1], CART, "");
    let over = put(&mut ports[1], CART, "d", "d-1");
    assert_eq!(over["error"], json!({"kind": "quota_exceeded", "what": "keys", "limit": 3}), "{over}");
    assert_eq!(list(&mut ports[2], CART, ""), before);
    assert_eq!(get(&mut ports[0], CART, "d"), json!({"ok": null}));
    // Overwriting and deleting are fine, and free room again.
    let v = version(&put(&mut ports[1], CART, "a", "a-2"));
    written.push(json!({"key": "a", "version": v, "value": "a-2", "deleted": false}));
    let deleted = ports[0].ask(json!({"op": "delete", "artifact": CART, "key": "b"}));
    assert_eq!(deleted, json!({"ok": true}));
    // A delete answers no version: the delivery's is checked for its order only.
    written.push(json!({"key": "b", "version": null, "value": null, "deleted": true}));
    let v = version(&put(&mut ports[2], CART, "d", "d-1"));
    written.push(json!({"key": "d", "version": v, "value": "d-1", "deleted": false}));
    // Compare-and-set against a stale version names the current one.
    let stale = ports[0].ask(json!({"op": "cas", "artifact": CART, "key": "d", "expected": 1, "value": "x"}));
    assert_eq!(stale["error"], json!({"kind": "version_mismatch", "current": v}), "{stale}");

    // Another slice's scope and the control plane are out of reach.
    assert_eq!(get(&mut ports[0], PAY, "a"), json!({"ok": null}), "pay does not see cart's keys");
    assert_eq!(list(&mut ports[0], PAY, ""), json!({"ok": []}));
    let routes_before = mgmt_list(&c, "routes/");
    let keys_before = mgmt_list(&c, "user/");
    for key in ["../routes/GET/x", "../../shop/org.example:cart/a", "/user/x", "a//b", "..", ""] {
        let answer = put(&mut ports[0], PAY, key, "evil");
        assert_eq!(answer["error"]["kind"], "invalid", "{key}: {answer}");
    }
    for prefix in ["../", "/"] {
        assert_eq!(list(&mut ports[0], PAY, prefix)["error"]["kind"], "invalid", "{prefix}");
    }
    // A key spelled like a control-plane key is only a key of the slice's own scope.
    version(&put(&mut ports[0], PAY, "routes/GET/x", "mine"));
    assert_eq!(mgmt_list(&c, "routes/"), routes_before);
    assert_eq!(mgmt_list(&c, "user/"), keys_before);
    let data: Vec<String> =
        mgmt_list(&c, "data/").as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        data,
        [
            "data/pay/org.example:pay/routes/GET/x",
            "data/shop/org.example:cart/a",
            "data/shop/org.example:cart/c",
            "data/shop/org.example:cart/d",
        ]
    );
    assert_eq!(get(&mut ports[1], CART, "a")["ok"]["value"], "a-2", "cart's data is unchanged");
    // The management KV API reads slice data but never writes it.
    let mgmt_put = http(c.nodes[1].management, "PUT", "/api/kv/data/shop/org.example:cart/a", b"x").unwrap();
    assert_eq!(mgmt_put.status, 403, "{}", mgmt_put.text());

    // Version 2 of the same artifact in the same blueprint sees version 1's data.
    let bump = format!(
        "name = \"shop\"\n[[slices]]\nartifact = \"{CART}\"\n[slices.kv]\nmax_keys = 3\n\
         [[slices]]\nartifact = \"{CART_V2}\"\n"
    );
    let _ = http(c.nodes[0].management, "DELETE", "/api/blueprints/shop", b"");
    wait_for(SETTLE, || list(&mut ports[0], CART, "").get("error").is_some()).unwrap();
    deploy(&c, &bump);
    wait_scoped(&mut ports, CART_V2);
    assert_eq!(get(&mut ports[2], CART_V2, "a")["ok"]["value"], "a-2");

    // The watch on node 3 got every change of cart's scope, in commit order, and nothing of pay's.
    let ok = wait_for(SETTLE, || {
        ports[2].ask(json!({"op": "deliveries", "instance": 7}))["ok"].as_array().map_or(0, Vec::len) >= written.len()
    });
    let delivered = ports[2].ask(json!({"op": "deliveries", "instance": 7}));
    assert!(ok.is_ok(), "{delivered}");
    let mut bodies: Vec<Value> = delivered["ok"].as_array().unwrap().iter().map(|d| d["body"].clone()).collect();
    let versions: Vec<u64> = bodies.iter().map(|b| b["version"].as_u64().unwrap_or(0)).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "commit order: {versions:?}");
    for (body, want) in bodies.iter_mut().zip(&written) {
        if want["version"].is_null() {
            body["version"] = Value::Null;
        }
    }
    assert_eq!(bodies, written);
    assert!(delivered["ok"].as_array().unwrap().iter().all(|d| d["method"] == "changed"));
    // After unwatching, nothing more is delivered.
    ports[2].ask(json!({"op": "unwatch", "artifact": CART, "instance": 7}));
    version(&put(&mut ports[0], CART_V2, "e", "e-1"));
    std::thread::sleep(Duration::from_millis(500));
    let after = ports[2].ask(json!({"op": "deliveries", "instance": 7}));
    assert_eq!(after["ok"].as_array().map(Vec::len), Some(written.len()), "{after}");
}
