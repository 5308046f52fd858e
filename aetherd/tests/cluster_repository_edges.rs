//! Edges of the artifact repository over a real process: an upload whose library runs code at load time
//! (an initialiser that exits the process) is refused by the upload check, and the node that checked it
//! keeps serving and keeps taking uploads; a check hung in such code dies with its node.

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
    library_running_at_load(dir, "std::process::exit(42)")
}

/// A shared library whose initialiser runs `code`, built with `rustc`.
fn library_running_at_load(dir: &Path, code: &str) -> Vec<u8> {
    std::fs::create_dir_all(dir).unwrap();
    let source = dir.join("runs_at_load.rs");
    std::fs::write(
        &source,
        format!(
            "#[used]\n#[link_section = \".init_array\"]\nstatic RUN_AT_LOAD: extern \"C\" fn() = run_at_load;\n\
             extern \"C\" fn run_at_load() {{ {code} }}\n"
        ),
    )
    .unwrap();
    let library = dir.join("libruns_at_load.so");
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

/// The process ids whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...: the fields after the last ')'.
            let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
            after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent)
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

#[test]
fn a_check_hung_in_load_time_code_dies_with_its_node() {
    let (mut c, dir) = start("hang", 1);
    let hangs =
        library_running_at_load(&dir.join("hang"), "loop { std::thread::sleep(std::time::Duration::from_secs(1)) }");
    let management = c.nodes[0].management;
    let upload = std::thread::spawn(move || {
        let _ = http(management, "PUT", "/repository/org/example/hang/1.0.0/hang-1.0.0.so", &hangs);
    });
    let node = c.pid(0).expect("the node runs");
    let mut check = None;
    let found = wait_for(Duration::from_secs(20), || {
        check = children_of(node).into_iter().next();
        check.is_some()
    });
    assert!(found.is_ok(), "no check process under the node: {}", c.log(0));
    let check = check.unwrap_or_default();
    c.kill(0);
    let gone = wait_for(Duration::from_secs(10), || !alive(check));
    assert!(gone.is_ok(), "the check process {check} outlived its node");
    drop(upload);
}
