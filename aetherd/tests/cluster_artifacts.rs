//! Artifact integrity over real processes: uploads checked against the client's SHA-256, fetched with their
//! checksum by every node that runs them, truncated uploads that store nothing, libraries changed on disk
//! refused at load, and clusters that trust signing keys loading only signed libraries.

use container::integrity;
mod repository_support;

use devcluster::{http, wait_for, LocalCluster};
use repository_support::{example, SETTLE};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

const ECHO: &str = "org.aether.examples:echo:1.0.0";
const ECHO_UPLOAD: &str = "/api/artifacts/org.aether.examples/echo/1.0.0";
const ECHO_FILE: &str = "org/aether/examples/echo/1.0.0/echo-1.0.0.so";
const COUNTER_UPLOAD: &str = "/api/artifacts/org.aether.examples/counter/1.0.0";
const COUNTER_FILE: &str = "org/aether/examples/counter/1.0.0/counter-1.0.0.so";

fn start(name: &str, extra_config: &str) -> LocalCluster {
    repository_support::start(&format!("artifacts-{name}"), extra_config)
}

fn stored(c: &LocalCluster, node: usize, file: &str) -> PathBuf {
    c.nodes[node].data_dir.join("repository").join(file)
}

/// One request with extra header lines; answers the status and the whole raw answer (head and body).
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn slices(c: &LocalCluster, node: usize) -> Vec<Value> {
    let listed = http(c.nodes[node].management, "GET", "/api/slices", b"").map(|r| r.json());
    listed.ok().and_then(|v| v["slices"].as_array().cloned()).unwrap_or_default()
}

fn post_blueprint(c: &LocalCluster, name: &str, artifact: &str, instances: usize) {
    let text = format!("name = \"{name}\"\n[[slices]]\nartifact = \"{artifact}\"\ninstances = {instances}\n");
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", text.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
}

fn all_alive(c: &LocalCluster) -> bool {
    (0..3).all(|i| c.health(i).is_some())
}

fn no_absolute_path(text: &str, c: &LocalCluster) {
    assert!(!text.contains(&c.spec.dir.display().to_string()), "{text}");
    assert!(!text.contains("/loaded/"), "{text}");
}

#[test]
fn a_wrong_checksum_stores_nothing_and_a_right_one_reaches_and_runs_everywhere() {
    let c = start("checksum", "");
    let bytes = example(ECHO_FILE);
    let digest = integrity::to_hex(&integrity::sha256(&bytes));
    let mut other = integrity::sha256(&bytes);
    other[0] ^= 1;

    let (status, answer) =
        request(c.nodes[0].management, "POST", ECHO_UPLOAD, &[("X-Aether-Sha256", &integrity::to_hex(&other))], &bytes);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("checksum_mismatch"), "{answer}");
    std::thread::sleep(Duration::from_millis(500));
    for n in 0..3 {
        assert!(!stored(&c, n, ECHO_FILE).exists(), "node {n} stored a refused upload");
        assert!(!integrity::checksum_file(&stored(&c, n, ECHO_FILE)).exists());
    }

    let (status, answer) = request(c.nodes[0].management, "POST", ECHO_UPLOAD, &[("X-Aether-Sha256", &digest)], &bytes);
    assert_eq!(status, 201, "{answer}");
    assert!(answer.contains(&digest), "the answer carries the sha256: {answer}");
    no_absolute_path(&answer, &c);
    let checked = |n: usize| {
        let file = stored(&c, n, ECHO_FILE);
        std::fs::read(&file).is_ok_and(|b| b == bytes)
            && integrity::check(&file, &bytes, &integrity::TrustedKeys::default()).is_ok()
    };
    assert!(checked(0), "the node that took the upload keeps a copy");
    post_blueprint(&c, "up", ECHO, 3);
    for n in 0..3 {
        let id = c.nodes[n].id.clone();
        let served_here = wait_for(SETTLE, || {
            http(c.nodes[n].app, "GET", "/echo/x", b"")
                .is_ok_and(|r| r.status == 200 && r.json()["node"] == id.as_str())
        });
        assert!(served_here.is_ok(), "node {n} does not serve echo itself: {:?}", slices(&c, 0));
    }
    // The other nodes fetched the library, with its checksum, from the storage plane before loading it.
    assert!((0..3).all(checked));
    // Every loaded copy was made under the data dir and deleted once mapped.
    for n in 0..3 {
        let loaded = c.nodes[n].data_dir.join("loaded");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&loaded).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::read_dir(&loaded).unwrap().count(), 0);
    }
}

#[test]
fn a_truncated_upload_stores_nothing_and_no_node_crashes() {
    let c = start("truncated", "");
    let bytes = example(ECHO_FILE);
    assert!(bytes.len() > 100_000);
    let addr = c.nodes[0].management;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    let head = format!("POST {ECHO_UPLOAD} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100000\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&bytes[..50_000]).unwrap();
    drop(stream);
    std::thread::sleep(Duration::from_secs(2));
    for n in 0..3 {
        assert!(!stored(&c, n, ECHO_FILE).exists(), "node {n} stored a truncated upload");
    }
    assert!(all_alive(&c));
}

#[test]
fn a_library_changed_on_disk_after_upload_is_refused_at_load() {
    let c = start("flipped", "");
    let bytes = example(ECHO_FILE);
    let up = http(c.nodes[0].management, "POST", ECHO_UPLOAD, &bytes).unwrap();
    assert_eq!(up.status, 201, "{}", up.text());
    // Every node's copy is damaged in place, beside the checksum file of the upload: flipped bytes (the
    // same size) on the node that took the upload, truncated on the others.
    for n in 0..3 {
        std::fs::create_dir_all(stored(&c, n, ECHO_FILE).parent().unwrap()).unwrap();
        integrity::write_checksum(&stored(&c, n, ECHO_FILE), &integrity::sha256(&bytes)).unwrap();
        let mut damaged = bytes.clone();
        if n == 0 {
            let middle = damaged.len() / 2;
            damaged[middle..middle + 64].iter_mut().for_each(|b| *b ^= 0xff);
        } else {
            damaged.truncate(bytes.len() / 2);
        }
        std::fs::write(stored(&c, n, ECHO_FILE), damaged).unwrap();
    }
    post_blueprint(&c, "damaged", ECHO, 3);
    // A copy of the wrong size is fetched again before loading; one of the right size whose bytes changed is
    // refused by the container's check, with the reason in its record.
    let refused = |s: &Value| s["state"] == "FAILED" && s["error"].as_str().is_some_and(|e| e.contains("SHA-256"));
    let settled = wait_for(SETTLE, || {
        let records = slices(&c, 1);
        records.iter().any(|s| s["node"] == "node-1" && refused(s))
            && records.iter().filter(|s| s["node"] != "node-1" && s["state"] == "ACTIVE").count() == 2
    });
    assert!(settled.is_ok(), "not as expected: {:?}", slices(&c, 1));
    for record in slices(&c, 1) {
        let error = record["error"].as_str().unwrap_or_default();
        no_absolute_path(error, &c);
    }
    for n in 1..3 {
        assert_eq!(std::fs::read(stored(&c, n, ECHO_FILE)).unwrap(), bytes, "node {n}'s copy was not fetched again");
    }
    assert!(http(c.nodes[1].app, "GET", "/echo/x", b"").is_ok_and(|r| r.status == 200));
    std::thread::sleep(Duration::from_secs(2));
    assert!(all_alive(&c), "a node died");
}

/// A fresh signing key pair; answers the secret key and the public key in hex.
fn signing_key(seed: u8) -> (ed25519_dalek::SigningKey, String) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let public = integrity::to_hex(key.verifying_key().as_bytes());
    (key, public)
}

fn put_by_hand(c: &LocalCluster, file: &str, bytes: &[u8]) {
    for n in 0..3 {
        let path = stored(c, n, file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        integrity::write_checksum(&path, &integrity::sha256(bytes)).unwrap();
    }
}

#[test]
fn a_cluster_that_trusts_keys_runs_only_signed_libraries() {
    let (author, public) = signing_key(11);
    let (stranger, _) = signing_key(12);
    let c = start("signed", &format!("[artifacts]\ntrusted_keys = [\"{public}\"]\n"));

    // Uploads: unsigned and wrongly signed are refused, nothing stored.
    let echo = example(ECHO_FILE);
    let echo_digest = integrity::sha256(&echo);
    let (status, answer) = request(c.nodes[0].management, "POST", ECHO_UPLOAD, &[], &echo);
    assert_eq!(status, 400, "{answer}");
    let foreign = integrity::to_hex(&integrity::sign(&stranger, &echo_digest));
    let (status, answer) =
        request(c.nodes[0].management, "POST", ECHO_UPLOAD, &[("X-Aether-Signature", &foreign)], &echo);
    assert_eq!(status, 400, "{answer}");
    assert!(!stored(&c, 0, ECHO_FILE).exists());

    // A library copied by hand with its checksum but no signature is refused at load, with a reason.
    put_by_hand(&c, ECHO_FILE, &echo);
    post_blueprint(&c, "unsigned", ECHO, 3);
    let unsigned = |s: &Value| {
        s["artifact"] == ECHO
            && s["state"] == "FAILED"
            && s["error"].as_str().is_some_and(|e| e.contains("only signed libraries"))
    };
    let failed = wait_for(SETTLE, || slices(&c, 1).iter().filter(|s| unsigned(s)).count() >= 3);
    assert!(failed.is_ok(), "unsigned not refused: {:?}", slices(&c, 1));
    assert!(all_alive(&c));

    // A signed upload is pushed with its signature and runs on every node.
    let counter = example(COUNTER_FILE);
    let signature = integrity::to_hex(&integrity::sign(&author, &integrity::sha256(&counter)));
    let (status, answer) =
        request(c.nodes[0].management, "POST", COUNTER_UPLOAD, &[("X-Aether-Signature", &signature)], &counter);
    assert_eq!(status, 201, "{answer}");
    let keys = integrity::TrustedKeys::parse(&[public.as_str()]).unwrap();
    let verified = |n: usize| integrity::check(&stored(&c, n, COUNTER_FILE), &counter, &keys).is_ok();
    assert!(verified(0));
    post_blueprint(&c, "signed", "org.aether.examples:counter:1.0.0", 3);
    let active = |s: &Value| s["artifact"] == "org.aether.examples:counter:1.0.0" && s["state"] == "ACTIVE";
    let running = wait_for(SETTLE, || slices(&c, 1).iter().filter(|s| active(s)).count() == 3);
    assert!(running.is_ok(), "signed not running: {:?}", slices(&c, 1));
    assert!((0..3).all(verified), "every node fetched the library with its signature");
}
