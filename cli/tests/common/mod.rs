//! Shared by the CLI's cluster tests: the `aetherd` binary, clusters whose nodes start with empty
//! repositories (the tests upload the example slices with `aether artifact push`), and running `aether`
//! as a process with a clean environment.

#![allow(dead_code)]

use devcluster::{example_slices_repo, http, wait_for, ClusterSpec, LocalCluster};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub const SETTLE: Duration = Duration::from_secs(45);

pub const SHOP: &str = r#"name = "shop"
[[slices]]
artifact = "org.aether.examples:echo:1.0.0"
instances = 2
[[slices]]
artifact = "org.aether.examples:inventory:1.0.0"
[[slices]]
artifact = "org.aether.examples:pricing:1.0.0"
[[slices]]
artifact = "org.aether.examples:orders:1.0.0"
depends_on = ["org.aether.examples:inventory:1.0.0", "org.aether.examples:pricing:1.0.0"]
"#;

/// The example slices the tests upload: (coordinates, file in the Maven-layout repository).
pub const EXAMPLES: [(&str, &str); 4] = [
    ("org.aether.examples:echo:1.0.0", "org/aether/examples/echo/1.0.0/echo-1.0.0.so"),
    ("org.aether.examples:inventory:1.0.0", "org/aether/examples/inventory/1.0.0/inventory-1.0.0.so"),
    ("org.aether.examples:pricing:1.0.0", "org/aether/examples/pricing/1.0.0/pricing-1.0.0.so"),
    ("org.aether.examples:orders:1.0.0", "org/aether/examples/orders/1.0.0/orders-1.0.0.so"),
];

/// `aetherd`: `$AETHER_TEST_AETHERD` when set (another build to check the tool against), else the one in
/// the same target folder as `aether` (built once when `cargo test -p cli` did not).
pub fn aetherd() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(path) = std::env::var_os("AETHER_TEST_AETHERD") {
            return PathBuf::from(path);
        }
        let path = Path::new(env!("CARGO_BIN_EXE_aether")).with_file_name("aetherd");
        if !path.exists() {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo).current_dir(root).args(["build", "-p", "aetherd"]).status().unwrap();
            assert!(status.success(), "building aetherd failed");
        }
        path
    })
    .clone()
}

pub fn example_library(file: &str) -> PathBuf {
    example_slices_repo().unwrap().join(file)
}

/// A temporary folder for one test (removed first if an earlier run left it).
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aether-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `nodes` nodes with empty repositories, all ready.
pub fn start(nodes: usize, name: &str) -> LocalCluster {
    start_with(ClusterSpec::new(nodes, &temp_dir(name).join("cluster"), &aetherd()))
}

pub fn start_with(spec: ClusterSpec) -> LocalCluster {
    let nodes = spec.nodes;
    let c = LocalCluster::start(spec).unwrap();
    let ready = wait_for(SETTLE, || (0..nodes).all(|i| c.health(i).is_some_and(|h| h["ready"] == true)));
    assert!(ready.is_ok(), "not ready: {}", c.log(0));
    c
}

/// What one run of `aether` did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Asserts exit code 0 and hands back itself.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }
}

/// Runs `aether ARGS` with no `AETHER_*` variables but `env`, and `stdin` as its input.
pub fn aether_with(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aether"));
    for (name, _) in std::env::vars() {
        if name.starts_with("AETHER_") {
            command.env_remove(name);
        }
    }
    command.args(args).envs(env.iter().copied());
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn aether(args: &[&str]) -> Run {
    aether_with(args, &[], b"")
}

/// `aether --node <node i> ARGS`.
pub fn at(c: &LocalCluster, node: usize, args: &[&str]) -> Run {
    let addr = c.nodes[node].management.to_string();
    let mut all = vec!["--node", addr.as_str()];
    all.extend_from_slice(args);
    aether(&all)
}

/// `aether --node <node i> --json ARGS`, exit code 0, stdout parsed.
pub fn at_json(c: &LocalCluster, node: usize, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    at(c, node, &all).ok().json()
}

/// Uploads the example slices with `aether artifact push` (one of them in `--json` form) and checks the
/// answers.
pub fn push_examples(c: &LocalCluster) {
    for (i, (coords, file)) in EXAMPLES.iter().enumerate() {
        let library = example_library(file);
        let library = library.to_str().unwrap();
        if i == 0 {
            let answer = at_json(c, 0, &["artifact", "push", library, coords]);
            let expected = sha256_hex(&std::fs::read(library).unwrap());
            assert_eq!(answer["sha256"], expected.as_str(), "{answer}");
            assert_eq!(answer["signed"], false, "{answer}");
        } else {
            let run = at(c, 0, &["artifact", "push", library, coords]).ok();
            assert!(run.stdout.contains(&format!("uploaded {coords}")), "{run:?}");
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /api/blueprints/shop` from node `i`.
pub fn shop_status(c: &LocalCluster, node: usize) -> Value {
    http(c.nodes[node].management, "GET", "/api/blueprints/shop", b"").map(|r| r.json()).unwrap_or(Value::Null)
}

/// Every slice of the blueprint has as many ACTIVE instances as it wants.
pub fn fully_active(status: &Value) -> bool {
    status["slices"].as_array().is_some_and(|slices| {
        !slices.is_empty() && slices.iter().all(|s| s["active"].as_u64() == s["desired"].as_u64())
    })
}

pub fn wait_deployed(c: &LocalCluster) {
    let ok = wait_for(SETTLE, || fully_active(&shop_status(c, 1)));
    assert!(ok.is_ok(), "not deployed: {}", shop_status(c, 1));
}

/// Whether node 0 serves `method path`: a route not built into this `aetherd` answers 404 "no such path"
/// (or 405 where a neighbouring route takes the path); that fails the test.
pub fn serves(c: &LocalCluster, method: &str, path: &str, body: &[u8]) -> bool {
    let Ok(r) = http(c.nodes[0].management, method, path, body) else { return false };
    let detail = r.json()["detail"].as_str().unwrap_or("").to_string();
    let absent = (r.status == 404 && detail.starts_with("no such path")) || r.status == 405;
    assert!(!absent, "{method} {path} is not served by the aetherd under test ({} {detail})", r.status);
    true
}
