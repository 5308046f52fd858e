//! Management authentication over real `aetherd` processes: keys and roles replicated to every node, key
//! rotation, the attack sequences (unauthenticated upload + blueprint, cross-origin posts, control-plane
//! KV writes), the refusal to serve beyond loopback without authentication, and private secret files.

use devcluster::{free_ports, http_with, wait_for, ClusterSpec, HttpResponse, LocalCluster};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(30);

fn spec(nodes: usize, name: &str) -> ClusterSpec {
    let dir = std::env::temp_dir().join(format!("aether-auth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ClusterSpec::new(nodes, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")))
}

fn call(c: &LocalCluster, node: usize, key: Option<&str>, method: &str, path: &str, body: &[u8]) -> HttpResponse {
    c.api_as(node, key, method, path, body).unwrap_or_else(|e| panic!("{method} {path} on node {node}: {e}"))
}

fn create_key(c: &LocalCluster, node: usize, name: &str, role: &str) -> (String, String) {
    let body = json!({ "name": name, "role": role }).to_string();
    let created = call(c, node, c.spec.admin_key.as_deref(), "POST", "/api/keys", body.as_bytes());
    assert_eq!(created.status, 201, "{}", created.text());
    let answer = created.json();
    (answer["id"].as_str().unwrap().to_string(), answer["key"].as_str().unwrap().to_string())
}

/// Waits until `key` gets `status` for `GET /api/status` on every node.
fn wait_status_everywhere(c: &LocalCluster, key: &str, status: u16) {
    let everywhere = wait_for(SETTLE, || {
        (0..c.nodes.len()).all(|n| c.api_as(n, Some(key), "GET", "/api/status", b"").is_ok_and(|r| r.status == status))
    });
    assert!(everywhere.is_ok(), "key did not reach {status} on every node");
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn keys_roles_rotation_and_the_attack_sequences_on_a_cluster_with_auth() {
    let c = LocalCluster::start(spec(3, "roles").with_auth()).unwrap();
    c.wait_ready(SETTLE).unwrap_or_else(|e| panic!("{e}\n{}", c.log(0)));
    let admin_file = c.spec.admin_key.clone();

    // No key, or a bad one: 401 with a challenge, on every node.
    for n in 0..3 {
        for key in [None, Some("aek_0123456789abcdef_0000"), Some("not-a-key")] {
            let refused = call(&c, n, key, "GET", "/api/status", b"");
            assert_eq!(refused.status, 401, "node {n}: {}", refused.text());
            assert_eq!(refused.json()["error"], "unauthorized");
            assert!(refused.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
        }
    }

    // Keys created on one node work on every node.
    let (_, viewer) = create_key(&c, 0, "dashboard", "viewer");
    let (operator_id, operator) = create_key(&c, 1, "ci", "operator");
    let (_, admin) = create_key(&c, 2, "ops", "admin");
    for key in [&viewer, &operator, &admin] {
        wait_status_everywhere(&c, key, 200);
    }
    for n in 0..3 {
        let refused = call(&c, n, Some(&viewer), "PUT", "/api/kv/user/a", b"1");
        assert_eq!(refused.status, 403, "viewer write on node {n}: {}", refused.text());
        assert_eq!(call(&c, n, Some(&operator), "PUT", "/api/kv/user/a", b"1").status, 200, "operator on node {n}");
        assert_eq!(call(&c, n, Some(&operator), "GET", "/api/keys", b"").status, 403);
        assert_eq!(call(&c, n, Some(&viewer), "GET", "/api/kv/user/a", b"").status, 200);
    }
    let listed = call(&c, 0, Some(&admin), "GET", "/api/keys", b"");
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()["count"], 3, "{}", listed.text());
    for secret in [&viewer, &operator, &admin] {
        assert!(!listed.text().contains(&secret[21..]), "a key leaked into the listing");
    }
    assert!(!listed.text().contains("hash"));

    // Rotation: a new operator key, the old one revoked; the old is refused everywhere, the new works.
    let (_, operator2) = create_key(&c, 0, "ci-2", "operator");
    let revoked = call(&c, 2, Some(&admin), "DELETE", &format!("/api/keys/{operator_id}"), b"");
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    wait_status_everywhere(&c, &operator, 401);
    wait_status_everywhere(&c, &operator2, 200);
    for n in 0..3 {
        assert_eq!(call(&c, n, Some(&operator), "PUT", "/api/kv/user/b", b"2").status, 401, "node {n}");
        assert_eq!(call(&c, n, Some(&operator2), "PUT", "/api/kv/user/b", b"2").status, 200, "node {n}");
    }

    // Upload + blueprint without a key: both refused, nothing stored on any node.
    let mut library = b"\x7fELF".to_vec();
    library.resize(4096, 0x90);
    let upload = call(&c, 0, None, "POST", "/api/artifacts/org.evil/payload/1.0.0", &library);
    assert_eq!(upload.status, 401, "{}", upload.text());
    let blueprint = "name = \"pwn\"\n[[slices]]\nartifact = \"org.evil:payload:1.0.0\"\n";
    assert_eq!(call(&c, 1, None, "POST", "/api/blueprints", blueprint.as_bytes()).status, 401);
    assert_eq!(call(&c, 1, Some(&viewer), "POST", "/api/blueprints", blueprint.as_bytes()).status, 403);
    for n in 0..3 {
        let stored = files_under(&c.nodes[n].data_dir);
        assert!(!stored.iter().any(|p| p.to_string_lossy().contains("payload")), "node {n} stored {stored:?}");
        assert_eq!(call(&c, n, Some(&admin), "GET", "/api/blueprints/pwn", b"").status, 404);
    }

    // A stranger announcing a 60 MiB upload is refused from its head: 401 at once, before one body byte.
    {
        use std::io::{Read, Write};
        let mut stranger = std::net::TcpStream::connect(c.nodes[2].management).unwrap();
        stranger.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let head = "POST /api/artifacts/org.evil/payload/2.0.0 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 62914560\r\n\r\n";
        stranger.write_all(head.as_bytes()).unwrap();
        let mut answer = [0u8; 512];
        let n = stranger.read(&mut answer).unwrap_or(0);
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 401"), "answered {answer:?} instead of refusing from the head");
    }

    // A cross-origin post with a valid key (a browser carrying credentials) is refused.
    let node = c.nodes[0].management;
    let bearer = format!("Bearer {admin}");
    let headers = [("Authorization", bearer.as_str()), ("Origin", "https://evil.example")];
    let cross = http_with(node, "PUT", "/api/kv/user/cross", &headers, b"x").unwrap();
    assert_eq!(cross.status, 403, "{}", cross.text());
    assert_eq!(cross.json()["error"], "cross_origin");
    assert!(cross.header("access-control-allow-origin").is_none());
    let fetch = [("Authorization", bearer.as_str()), ("Sec-Fetch-Site", "cross-site")];
    assert_eq!(http_with(node, "POST", "/api/blueprints", &fetch, blueprint.as_bytes()).unwrap().status, 403);
    assert_eq!(call(&c, 0, Some(&admin), "GET", "/api/kv/user/cross", b"").status, 404);

    // The generic KV API writes only user/ keys, whatever the role; key records are never readable.
    let routes_before = call(&c, 0, Some(&admin), "GET", "/api/kv?prefix=routes/", b"").json();
    let injected =
        call(&c, 0, Some(&admin), "PUT", "/api/kv/routes/GET/pwn", br#"{"artifact":"org.evil:payload:1.0.0"}"#);
    assert_eq!(injected.status, 403, "{}", injected.text());
    assert!(injected.json()["detail"].as_str().unwrap().contains("user/"));
    assert_eq!(call(&c, 0, Some(&admin), "DELETE", "/api/kv/blueprints/x", b"").status, 403);
    std::thread::sleep(Duration::from_millis(300));
    for n in 0..3 {
        assert_eq!(call(&c, n, Some(&admin), "GET", "/api/kv?prefix=routes/", b"").json(), routes_before, "node {n}");
        assert_eq!(call(&c, n, Some(&admin), "GET", "/api/kv/routes/GET/pwn", b"").status, 404);
    }
    let all = call(&c, 0, Some(&admin), "GET", "/api/kv", b"");
    assert!(!all.text().contains("keys/"), "key records listed: {}", all.text());
    assert_eq!(call(&c, 0, Some(&admin), "GET", "/api/kv?prefix=keys/", b"").status, 403);

    // The node-local bootstrap key keeps working.
    assert_eq!(call(&c, 1, admin_file.as_deref(), "GET", "/api/keys", b"").status, 200);

    // Keys are checked against the local replica: a node without a quorum still serves stale reads to them.
    let mut c = c;
    c.kill(1);
    c.kill(2);
    let alone = wait_for(SETTLE, || c.health(0).is_some_and(|h| h["ready"] == false));
    assert!(alone.is_ok(), "node-1 still reports ready alone");
    let read = call(&c, 0, Some(&viewer), "GET", "/api/kv/user/a?stale=true", b"");
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(call(&c, 0, Some(&operator), "GET", "/api/kv/user/a?stale=true", b"").status, 401);
}

/// Runs `aetherd` with `args` and waits up to 10 s for it to exit; its exit code and output.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aetherd"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            return (out.status.code(), text);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (None, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Node 0's config with management on 0.0.0.0 (same port), and that port.
fn listen_everywhere(c: &LocalCluster) -> u16 {
    let port = c.nodes[0].management.port();
    let config = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    let config =
        config.replace(&format!("management = \"127.0.0.1:{port}\""), &format!("management = \"0.0.0.0:{port}\""));
    std::fs::write(&c.nodes[0].config, config).unwrap();
    port
}

#[test]
fn management_beyond_loopback_needs_authentication_or_an_explicit_opt_out() {
    // --dev never authenticates: beyond loopback it refuses to start.
    let ports = free_ports(3);
    let data = std::env::temp_dir().join(format!("aether-auth-dev-{}", std::process::id()));
    let (management, app, cluster) =
        (format!("0.0.0.0:{}", ports[0]), format!("127.0.0.1:{}", ports[1]), format!("127.0.0.1:{}", ports[2]));
    let args = ["--dev", "--management", &management, "--app", &app, "--cluster", &cluster, "--data-dir"];
    let (code, output) = run_to_exit(&[&args[..], &[data.to_str().unwrap()]].concat());
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {output}");
    assert!(output.contains(&management) && output.contains("without authentication"), "{output}");

    // A config naming 0.0.0.0 and no key file: authentication on, a first admin key generated, private.
    let mut c = LocalCluster::prepare(spec(1, "wide")).unwrap();
    listen_everywhere(&c);
    c.start_node(0).unwrap();
    let key_file = c.nodes[0].data_dir.join("admin.key");
    wait_for(SETTLE, || key_file.is_file()).unwrap_or_else(|_| panic!("no admin.key:\n{}", c.log(0)));
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    let key = std::fs::read_to_string(&key_file).unwrap().trim().to_string();
    let answered =
        wait_for(SETTLE, || c.api_as(0, Some(&key), "GET", "/api/status", b"").is_ok_and(|r| r.status == 200));
    assert!(answered.is_ok(), "the generated key does not work:\n{}", c.log(0));
    assert_eq!(call(&c, 0, None, "GET", "/api/status", b"").status, 401);
    assert!(c.log(0).contains(&key_file.display().to_string()), "the key file's path is not logged");
    assert!(!c.log(0).contains(&key), "the key itself is logged");
    drop(c);

    // The explicit opt-out starts, warns, and serves without keys.
    let mut open = spec(1, "open");
    open.management = vec!["allow_unauthenticated = true".into()];
    let mut c = LocalCluster::prepare(open).unwrap();
    listen_everywhere(&c);
    c.start_node(0).unwrap();
    let served = wait_for(SETTLE, || c.api_as(0, None, "GET", "/api/status", b"").is_ok_and(|r| r.status == 200));
    assert!(served.is_ok(), "{}", c.log(0));
    assert!(c.log(0).contains("WITHOUT authentication"), "no warning:\n{}", c.log(0));
    assert!(!c.nodes[0].data_dir.join("admin.key").exists());
}

#[test]
fn open_secret_files_stop_the_node_naming_the_chmod() {
    for file in ["secret", "admin.key"] {
        let mut c = LocalCluster::prepare(spec(1, &format!("open-{file}")).with_auth()).unwrap();
        let path = c.spec.dir.join(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        c.start_node(0).unwrap();
        let fix = format!("chmod 600 {}", path.display());
        let stopped = wait_for(Duration::from_secs(10), || c.log(0).contains(&fix));
        assert!(stopped.is_ok(), "{file}: the log does not name `{fix}`:\n{}", c.log(0));
        // It stops by itself: a SIGTERM sent now could end it before its own exit and hide the code.
        let mut code = None;
        let exited = wait_for(Duration::from_secs(10), || {
            code = c.exited(0);
            code.is_some()
        });
        assert!(exited.is_ok(), "{file}: the node is still running:\n{}", c.log(0));
        assert!(code.flatten().is_some_and(|code| code != 0), "{file}: exit {code:?}");
        assert!(c.api(0, "GET", "/api/health", b"").is_err(), "{file}: the node serves anyway");
    }
}

#[test]
fn without_a_key_file_a_loopback_cluster_needs_no_keys() {
    let c = LocalCluster::start(spec(1, "loopback")).unwrap();
    c.wait_ready(SETTLE).unwrap();
    assert_eq!(call(&c, 0, None, "PUT", "/api/kv/user/a", b"1").status, 200);
    assert_eq!(call(&c, 0, None, "PUT", "/api/kv/routes/GET/x", b"1").status, 403);
    let rebinding =
        http_with(c.nodes[0].management, "GET", "/api/status", &[("Host", "attacker.example")], b"").unwrap();
    assert_eq!(rebinding.status, 421, "{}", rebinding.text());
}
