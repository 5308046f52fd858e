//! Mutual TLS on the cluster port over real processes, with certificates made here by rcgen: three nodes
//! with `[cluster_tls]` form a cluster and serve a KV write; SIGHUP reloads the files (a broken file keeps
//! the running certificates); a fourth node whose certificate comes from another CA is refused, and both
//! sides' logs say so.

use devcluster::{http, wait_for, ClusterSpec, LocalCluster};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    /// Writes `node.pem` and `node.key` (mode 600) for node `id` into `dir`.
    fn issue(&self, id: &str, dir: &Path) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![id.to_string()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        std::fs::write(dir.join("node.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("node.key"), key.serialize_pem()).unwrap();
        std::fs::set_permissions(dir.join("node.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

fn peers_connected(c: &LocalCluster, i: usize) -> Option<u64> {
    c.health(i).and_then(|h| h["peers_connected"].as_u64())
}

#[test]
fn a_tls_cluster_forms_and_serves_and_a_node_of_another_ca_is_refused() {
    let dir = std::env::temp_dir().join(format!("aether-cluster-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(4, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")));
    spec.extra_config =
        "[cluster_tls]\nca_file = \"../ca.pem\"\ncert_file = \"node.pem\"\nkey_file = \"node.key\"\n".into();
    let mut cluster = LocalCluster::prepare(spec).unwrap();
    let (ca, other_ca) = (Ca::new("Aether cluster CA"), Ca::new("Another CA"));
    std::fs::write(dir.join("ca.pem"), ca.cert.pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other_ca.cert.pem()).unwrap();
    for node in &cluster.nodes[..3] {
        ca.issue(&node.id, node.config.parent().unwrap());
    }
    // node-4 belongs to another CA: its certificate is signed by it, and it trusts only it.
    let stranger = cluster.nodes[3].clone();
    other_ca.issue(&stranger.id, stranger.config.parent().unwrap());
    // The members' cluster is the three of them (a new cluster waits for every configured member).
    for node in &cluster.nodes[..3] {
        let text = std::fs::read_to_string(&node.config).unwrap();
        let entry = format!(", \"{}@{}\"", stranger.id, stranger.cluster);
        assert!(text.contains(&entry));
        std::fs::write(&node.config, text.replace(&entry, "")).unwrap();
    }
    let text = std::fs::read_to_string(&stranger.config).unwrap();
    std::fs::write(&stranger.config, text.replace("../ca.pem", "../other-ca.pem")).unwrap();

    for i in 0..3 {
        cluster.start_node(i).unwrap();
    }
    let formed = wait_for(SETTLE, || (0..3).all(|i| peers_connected(&cluster, i) == Some(2)));
    assert!(formed.is_ok(), "the TLS cluster did not form:\n{}", cluster.log(0));
    wait_for(SETTLE, || (0..3).all(|i| cluster.health(i).is_some_and(|h| h["ready"] == true))).unwrap();
    let mut put = None;
    let wrote = wait_for(SETTLE, || {
        put = http(cluster.nodes[0].management, "PUT", "/api/kv/user/tls", b"over mutual tls").ok();
        put.as_ref().is_some_and(|r| r.status == 200)
    });
    assert!(wrote.is_ok(), "the write failed: {:?}", put.map(|r| r.text()));
    let read = wait_for(SETTLE, || {
        http(cluster.nodes[2].management, "GET", "/api/kv/user/tls", b"")
            .is_ok_and(|r| r.status == 200 && r.json()["value"] == "over mutual tls")
    });
    assert!(read.is_ok(), "node-3 never read the value back");
    assert!(cluster.log(0).contains("connected to node-2"), "{}", cluster.log(0));

    // SIGHUP reloads the files; a broken file is refused and the running certificates stay.
    let hup = |c: &LocalCluster| {
        let pid = c.pid(0).unwrap().to_string();
        assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    };
    hup(&cluster);
    let reloaded = wait_for(SETTLE, || cluster.log(0).contains("cluster TLS certificates reloaded"));
    assert!(reloaded.is_ok(), "no reload on SIGHUP:\n{}", cluster.log(0));
    let node1_dir = cluster.nodes[0].config.parent().unwrap().to_path_buf();
    let good_cert = std::fs::read(node1_dir.join("node.pem")).unwrap();
    std::fs::write(node1_dir.join("node.pem"), "not a certificate").unwrap();
    hup(&cluster);
    let kept = wait_for(SETTLE, || cluster.log(0).contains("cluster TLS reload failed, keeping the current"));
    assert!(kept.is_ok(), "a broken file was not reported:\n{}", cluster.log(0));
    std::fs::write(node1_dir.join("node.pem"), good_cert).unwrap();
    assert_eq!(peers_connected(&cluster, 0), Some(2), "node-1 lost its peers on SIGHUP");

    cluster.start_node(3).unwrap();
    let refused_both_sides = wait_for(SETTLE, || {
        let member = cluster.log(0);
        let outsider = cluster.log(3);
        let says = |log: &str| {
            log.contains("TLS: the peer's certificate is not signed by this cluster's CA")
                || log.contains("TLS: the peer refused this node's certificate")
        };
        member.contains("refused connection from 127.0.0.1: TLS: the peer") && says(&outsider)
    });
    assert!(
        refused_both_sides.is_ok(),
        "no clear refusal in the logs\n--- node-1:\n{}\n--- node-4:\n{}",
        cluster.log(0),
        cluster.log(3)
    );
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..3 {
        assert_eq!(peers_connected(&cluster, i), Some(2), "node {} let the stranger in", i + 1);
    }
    assert_eq!(peers_connected(&cluster, 3), Some(0), "the stranger got in");
    // A refused peer costs a few lines, not one per redial.
    let outsider_lines = cluster.log(3).lines().filter(|l| l.contains("not signed by this cluster's CA")).count();
    assert!(outsider_lines <= 6, "{outsider_lines} lines about the same refusal:\n{}", cluster.log(3));
}

#[test]
fn a_readable_key_or_a_missing_file_stops_the_node_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("aether-cluster-tls-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(1, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")));
    spec.extra_config =
        "[cluster_tls]\nca_file = \"../ca.pem\"\ncert_file = \"node.pem\"\nkey_file = \"node.key\"\n".into();
    let cluster = LocalCluster::prepare(spec).unwrap();
    let node_dir = cluster.nodes[0].config.parent().unwrap().to_path_buf();
    let ca = Ca::new("Aether cluster CA");
    std::fs::write(dir.join("ca.pem"), ca.cert.pem()).unwrap();
    ca.issue("node-1", &node_dir);
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aetherd"))
            .arg("--config")
            .arg(&cluster.nodes[0].config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "the node started with a bad [cluster_tls]");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    std::fs::set_permissions(node_dir.join("node.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = run();
    assert!(stderr.contains("cluster_tls.key_file") && stderr.contains("chmod 600"), "{stderr}");
    std::fs::set_permissions(node_dir.join("node.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(dir.join("ca.pem")).unwrap();
    let stderr = run();
    assert!(stderr.contains("cluster_tls.ca_file") && stderr.contains("cannot read"), "{stderr}");
}
