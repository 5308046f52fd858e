//! Edges of the artifact repository over a real process: an upload whose library runs code at load time
//! (an initialiser that exits the process) is refused by the upload check, and the node that checked it
//! keeps serving and keeps taking uploads.

use devcluster::{example_slices_repo, http, wait_for, ClusterSpec, LocalCluster};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);
const ECHO_FILE: &str = "org/aether/examples/echo/1.0.0/echo-1.0.0.so";

fn start(name: &str, nodes: usize) -> (LocalCluster, PathBuf) {
    let dir = std::env::temp_dir().join(format!("aether-repository-edges-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = ClusterSpec::new(nodes, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")));
    let mut c = LocalCluster::prepare(spec).unwrap();
    for i in 0..nodes {
        c.start_node(i).unwrap();
    }
    let ready = wait_for(SETTLE, || (0..nodes).all(|i| c.health(i).is_some_and(|h| h["ready"] == true)));
    assert!(ready.is_ok(), "not ready: {}", c.log(0));
    (c, dir)
}

fn call(c: &LocalCluster, node: usize, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let answer = http(c.nodes[node].management, method, path, body).unwrap();
    (answer.status, String::from_utf8_lossy(&answer.body).into_owned())
}

/// A shared library whose initialiser exits the process that loads it with status 42, built with `rustc`.
fn library_exiting_at_load(dir: &Path) -> Vec<u8> {
    std::fs::create_dir_all(dir).unwrap();
    let source = dir.join("exits_at_load.rs");
    std::fs::write(
        &source,
        "#[used]\n#[link_section = \".init_array\"]\nstatic EXIT_AT_LOAD: extern \"C\" fn() = exit_at_load;\n\
         extern \"C\" fn exit_at_load() { std::process::exit(42) }\n",
    )
    .unwrap();
    let library = dir.join("libexits_at_load.so");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let built = std::process::Command::new(rustc)
        .args(["--crate-type", "cdylib", "-o"])
        .arg(&library)
        .arg(&source)
        .output()
        .expect("rustc runs");
    assert!(built.status.success(), "rustc: {}", String::from_utf8_lossy(&built.stderr));
    std::fs::read(&library).unwrap()
}

#[test]
fn a_library_whose_initialiser_exits_is_refused_and_the_node_keeps_serving() {
    let (c, dir) = start("init", 1);
    let evil = library_exiting_at_load(&dir.join("evil"));
    assert!(evil.starts_with(b"\x7fELF"));

    let (status, body) = call(&c, 0, "PUT", "/repository/org/example/evil/1.0.0/evil-1.0.0.so", &evil);
    assert_eq!(status, 422, "{body}");
    let detail = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["detail"].to_string();
    assert!(detail.contains("exits or crashes"), "says what the library did: {detail}");
    assert!(c.health(0).is_some_and(|h| h["ready"] == true), "the node stopped serving: {}", c.log(0));
    let (status, body) = call(&c, 0, "GET", "/api/artifacts", b"");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("evil"), "a refused upload is listed: {body}");

    // The check is not left stuck: the next upload is checked and taken.
    let echo = std::fs::read(example_slices_repo().unwrap().join(ECHO_FILE)).unwrap();
    let (status, body) = call(&c, 0, "PUT", &format!("/repository/{ECHO_FILE}"), &echo);
    assert_eq!(status, 201, "{body}");
}
