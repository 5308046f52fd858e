//! Reaching nodes: failover through `AETHER_NODES` when the first node is killed, exit 3 naming every
//! address tried, API keys from `--key` / `AETHER_API_KEY`, `https://` nodes with `--ca`, and the
//! interactive mode with its history.

mod common;

use common::*;
use devcluster::{free_ports, wait_for, ClusterSpec, LocalCluster};

#[test]
fn a_killed_first_node_fails_over_to_the_next_in_aether_nodes() {
    let mut c = start(3, "failover");
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.management.to_string()).collect();
    let list = addrs.join(",");
    let before = aether_with(&["--json", "status"], &[("AETHER_NODES", &list)], b"").ok();
    assert_eq!(before.json()["node"], "node-1");

    c.kill(0);
    let ready = wait_for(SETTLE, || (1..3).all(|i| c.health(i).is_some_and(|h| h["ready"] == true)));
    assert!(ready.is_ok(), "{}", c.log(1));
    let after = aether_with(&["--json", "status"], &[("AETHER_NODES", &list)], b"").ok();
    assert_eq!(after.json()["node"], "node-2", "{after:?}");
    // The chosen node first (dead), then the list: the answer comes from the list.
    let chosen =
        aether_with(&["--json", "health"], &[("AETHER_NODE", &addrs[0]), ("AETHER_NODES", &addrs[2])], b"").ok();
    assert_eq!(chosen.json()["node"], "node-3");
    // A KV write carries an Idempotency-Key, so it may move on too; it is applied once.
    let put = aether_with(&["kv", "put", "user/failover", "v1", "--json"], &[("AETHER_NODES", &list)], b"").ok();
    let version = put.json()["version"].as_u64().unwrap();
    let got = aether_with(&["kv", "get", "user/failover", "--json"], &[("AETHER_NODES", &list)], b"").ok();
    assert_eq!((got.json()["value"].as_str(), got.json()["version"].as_u64()), (Some("v1"), Some(version)));

    // Only the dead node: exit 3, naming it.
    let dead = aether(&["--node", &addrs[0], "status"]);
    assert_eq!(dead.code, 3, "{dead:?}");
    assert!(dead.stderr.contains(&addrs[0]) && dead.stderr.contains("connection refused"), "{dead:?}");
    assert!(dead.stdout.is_empty(), "{dead:?}");
}

#[test]
fn dead_addresses_exit_3_naming_each_one() {
    let ports = free_ports(2);
    let (a, b) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
    let one = aether(&["--node", &a, "nodes"]);
    assert_eq!(one.code, 3, "{one:?}");
    assert!(one.stderr.contains(&a), "{one:?}");
    let both = aether_with(&["kv", "put", "user/x", "1"], &[("AETHER_NODES", &format!("{a},{b}"))], b"");
    assert_eq!(both.code, 3, "{both:?}");
    assert!(both.stderr.contains(&a) && both.stderr.contains(&b), "{both:?}");
    // The default node is 127.0.0.1:8080 (`cargo xtask run`'s node 1); say so when it is down.
    if std::net::TcpStream::connect("127.0.0.1:8080").is_err() {
        let default = aether(&["status"]);
        assert_eq!(default.code, 3, "{default:?}");
        assert!(default.stderr.contains("127.0.0.1:8080"), "{default:?}");
    }
}

#[test]
fn api_keys_come_from_the_flag_or_the_environment() {
    let dir = temp_dir("auth");
    let c = start_with(ClusterSpec::new(1, &dir.join("cluster"), &aetherd()).with_auth());
    let key = c.spec.admin_key.clone().unwrap();
    let node = c.nodes[0].management.to_string();
    let without = aether(&["--node", &node, "status"]);
    assert_eq!(without.code, 1, "{without:?}");
    assert!(without.stderr.contains("401"), "{without:?}");
    let with_flag = aether(&["--node", &node, "--key", &key, "--json", "status"]).ok();
    assert_eq!(with_flag.json()["node"], "node-1");
    // `kv put KEY VALUE`: the KV key is not taken for the API key.
    let with_flag = aether(&["--node", &node, "--key", &key, "--json", "kv", "put", "user/k", "v"]).ok();
    assert!(with_flag.json()["version"].is_u64());
    let with_env =
        aether_with(&["--json", "kv", "get", "user/k"], &[("AETHER_NODE", &node), ("AETHER_API_KEY", &key)], b"");
    assert_eq!(with_env.ok().json()["value"], "v");
    let wrong = aether_with(&["status"], &[("AETHER_NODE", &node), ("AETHER_API_KEY", "aek_wrong")], b"");
    assert_eq!(wrong.code, 1, "{wrong:?}");
}

/// A CA and a leaf for `localhost` and 127.0.0.1 signed by it, as PEM files in `dir`.
fn write_ca_and_leaf(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "test development CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf_params.distinguished_name.push(DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("http.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("http.key"), leaf_key.serialize_pem()).unwrap();
}

#[test]
fn https_nodes_are_reached_with_the_ca_and_refused_without_it() {
    let dir = temp_dir("tls");
    write_ca_and_leaf(&dir);
    let mut c = LocalCluster::prepare(ClusterSpec::new(1, &dir.join("cluster"), &aetherd())).unwrap();
    let mut config = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    config.push_str(&format!("[tls]\ncert_file = \"{0}/http.pem\"\nkey_file = \"{0}/http.key\"\n", dir.display()));
    std::fs::write(&c.nodes[0].config, config).unwrap();
    c.start_node(0).unwrap();
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let port = c.nodes[0].management.port();
    for url in [format!("https://localhost:{port}"), format!("https://127.0.0.1:{port}")] {
        let ready = wait_for(SETTLE, || aether(&["--node", &url, "--ca", ca, "health"]).code == 0);
        assert!(ready.is_ok(), "{:?}\n{}", aether(&["--node", &url, "--ca", ca, "health"]), c.log(0));
        let status = aether_with(&["--json", "status"], &[("AETHER_NODE", &url), ("AETHER_CA", ca)], b"").ok();
        assert_eq!(status.json()["node"], "node-1");
    }
    // Without the CA the certificate is not trusted: nothing was sent, exit 3 saying TLS.
    let untrusted = aether(&["--node", &format!("https://localhost:{port}"), "status"]);
    assert_eq!(untrusted.code, 3, "{untrusted:?}");
    assert!(untrusted.stderr.contains("TLS"), "{untrusted:?}");
    // Plain HTTP to a TLS port gets no HTTP answer.
    let plain = aether(&["--node", &format!("127.0.0.1:{port}"), "--timeout", "3", "status"]);
    assert_eq!(plain.code, 3, "{plain:?}");
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn interactive_mode_runs_each_line_and_keeps_a_history() {
    let c = start(1, "interactive");
    let home = temp_dir("interactive-home");
    let node = c.nodes[0].management.to_string();
    let lines = "status --json\nkv put user/i 'two words'\n\nkv get user/i\nnosuchverb\nkv put user/secret x --key abc\nexit\nstatus\n";
    let run = aether_with(&["--node", &node], &[("HOME", home.to_str().unwrap())], lines.as_bytes());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("\"node\": \"node-1\""), "{run:?}");
    assert!(run.stdout.contains("user/i: version ") && run.stdout.contains("two words\n"), "{run:?}");
    assert!(run.stderr.contains("nosuchverb"), "{run:?}");
    // `exit` left: the `status` after it did not run (one status answer only).
    assert_eq!(run.stdout.matches("\"node\": \"node-1\"").count(), 1, "{run:?}");
    let history = std::fs::read_to_string(home.join(".aether_history")).unwrap();
    assert!(history.contains("kv get user/i") && !history.contains("--key"), "{history}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.join(".aether_history")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the history is private");
    let _ = std::fs::remove_dir_all(&home);
}
