//! Real `aetherd` processes on 127.0.0.1: connecting, refusing strangers, redialing, garbage, faults.

use devcluster::{http, wait_for, ClusterSpec, LocalCluster};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

fn spec(nodes: usize, name: &str) -> ClusterSpec {
    let dir = std::env::temp_dir().join(format!("aether-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ClusterSpec::new(nodes, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")))
}

const SETTLE: Duration = Duration::from_secs(15);

#[test]
fn three_processes_connect_to_each_other() {
    let cluster = LocalCluster::start(spec(3, "connect")).unwrap();
    cluster.wait_connected(2, SETTLE).unwrap();
    // Readiness follows the failure detector's next evaluation.
    wait_for(SETTLE, || (0..3).all(|i| cluster.health(i).is_some_and(|h| h["ready"] == true))).unwrap();
    for i in 0..3 {
        let health = cluster.health(i).unwrap();
        assert_eq!(health["ready"], true);
        assert_eq!(health["nodes"], 3);
        let nodes = http(cluster.nodes[i].management, "GET", "/api/nodes", b"").unwrap().json();
        let list = nodes["nodes"].as_array().unwrap();
        assert_eq!(list.len(), 3);
        assert!(list.iter().all(|n| n["connected"] == true));
        assert!(list.iter().filter(|n| n["self"] == false).all(|n| n["last_seen_ms"].as_u64().unwrap() < 1000));
    }
    let missing = http(cluster.nodes[0].management, "GET", "/api/nope", b"").unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "not_found");
}

#[test]
fn wrong_secret_and_wrong_cluster_are_refused_and_logged() {
    let mut cluster = LocalCluster::prepare(spec(3, "refuse")).unwrap();
    let secret2 = cluster.spec.dir.join("other-secret");
    std::fs::write(&secret2, b"a different secret").unwrap();
    std::fs::set_permissions(&secret2, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config2 = std::fs::read_to_string(&cluster.nodes[1].config).unwrap();
    let config2 =
        config2.replace(&cluster.spec.dir.join("secret").display().to_string(), &secret2.display().to_string());
    std::fs::write(&cluster.nodes[1].config, config2).unwrap();
    let config3 = std::fs::read_to_string(&cluster.nodes[2].config).unwrap();
    std::fs::write(&cluster.nodes[2].config, config3.replace("name = \"demo\"", "name = \"elsewhere\"")).unwrap();
    for i in 0..3 {
        cluster.start_node(i).unwrap();
    }
    let refused = wait_for(SETTLE, || {
        let log = cluster.log(0);
        log.contains("cluster secret differs")
            && log.contains("'elsewhere' is not this node's cluster 'demo'")
            && cluster.log(1).contains("cluster secret differs")
            && cluster.log(2).contains("refused")
    });
    assert!(refused.is_ok(), "node-1 log lacks the refusals:\n{}", cluster.log(0));
    assert!(cluster.log(1).contains("cluster secret differs"), "node-2 log:\n{}", cluster.log(1));
    assert!(cluster.log(2).contains("refused"), "node-3 log:\n{}", cluster.log(2));
    for i in 0..3 {
        // The refusals can be logged before the management port listens.
        wait_for(SETTLE, || cluster.health(i).is_some()).unwrap();
        let health = cluster.health(i).unwrap();
        assert_eq!(health["peers_connected"], 0, "node {i}: {health}");
        assert_eq!(health["ready"], false);
    }
}

#[test]
fn killed_node_is_redialed_after_restart() {
    let mut cluster = LocalCluster::start(spec(3, "redial")).unwrap();
    cluster.wait_connected(2, SETTLE).unwrap();
    cluster.kill(2);
    wait_for(SETTLE, || cluster.health(0).and_then(|h| h["peers_connected"].as_u64()) == Some(1)).unwrap();
    let majority = wait_for(SETTLE, || cluster.health(0).is_some_and(|h| h["ready"] == true));
    assert!(majority.is_ok(), "two of three is still a majority");
    cluster.kill(1);
    wait_for(SETTLE, || cluster.health(0).and_then(|h| h["ready"].as_bool()) == Some(false)).unwrap();
    cluster.start_node(1).unwrap();
    cluster.start_node(2).unwrap();
    cluster.wait_connected(2, SETTLE).unwrap();
}

#[test]
fn garbage_on_the_cluster_port_does_not_hurt_the_node() {
    let cluster = LocalCluster::start(spec(2, "garbage")).unwrap();
    cluster.wait_connected(1, SETTLE).unwrap();
    for junk in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0xAE, 0x7A, 1, 200, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0][..]] {
        let mut s = std::net::TcpStream::connect(cluster.nodes[0].cluster).unwrap();
        s.write_all(junk).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        // The node closes the connection on us.
        while std::io::Read::read(&mut s, &mut buf).map(|n| n > 0).unwrap_or(false) {}
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(cluster.health(0).unwrap()["peers_connected"], 1);
    assert!(cluster.log(0).contains("protocol error"), "{}", cluster.log(0));
}

#[test]
fn fault_injection_partitions_and_heals() {
    let cluster = LocalCluster::start(spec(3, "faults")).unwrap();
    cluster.wait_connected(2, SETTLE).unwrap();
    let body = br#"{"rules":[{"peer":"node-2","direction":"both","action":"drop"}]}"#;
    let set = http(cluster.nodes[0].management, "POST", "/api/debug/faults", body).unwrap();
    assert_eq!(set.status, 200, "{}", set.text());
    // node-1 drops everything to and from node-2: their connection dies on both sides, node-3 is untouched.
    wait_for(SETTLE, || {
        let h1 = cluster.health(0).and_then(|h| h["peers_connected"].as_u64());
        let h2 = cluster.health(1).and_then(|h| h["peers_connected"].as_u64());
        h1 == Some(1) && h2 == Some(1)
    })
    .unwrap();
    assert_eq!(cluster.health(2).unwrap()["peers_connected"], 2);
    let healed = http(cluster.nodes[0].management, "DELETE", "/api/debug/faults", b"").unwrap();
    assert_eq!(healed.status, 200);
    cluster.wait_connected(2, SETTLE).unwrap();
}

#[test]
fn bad_config_exits_non_zero_naming_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("aether-test-badconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("aetherd.toml");
    std::fs::write(&path, "[node]\nid = \"node-1\"\ndata_dir = \"/tmp/x\"\nflavour = \"salty\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aetherd")).arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("line 4") && stderr.contains("flavour"),
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_the_node_cleanly() {
    let mut cluster = LocalCluster::start(spec(1, "sigterm")).unwrap();
    wait_for(SETTLE, || cluster.health(0).is_some()).unwrap();
    assert_eq!(cluster.stop(0, Duration::from_secs(5)), Some(0));
    assert!(cluster.log(0).contains("stopped"));
}
