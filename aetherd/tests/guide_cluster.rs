//! SLICES.md on a real 3-node cluster, step by step, with the guide's own text: `cargo xtask new-slice` makes
//! a crate outside the workspace (the SDK by path), the guide's `src/lib.rs` replaces the generated one,
//! `cargo test` and `cargo build --release` pass, the library is uploaded through the management API and the
//! guide's blueprint posted; every node's app port then answers the route, and the blueprint posted again
//! with another greeting changes the answer of the running instances (live config). So the guide cannot drift.

use devcluster::{http, http_with, wait_for, LocalCluster};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("aetherd sits in the workspace")
}

/// The fenced block right after the marker comment `<!-- guide:{name} -->`.
fn guide_block(guide: &str, name: &str) -> String {
    let marker = format!("<!-- guide:{name} -->");
    let after = guide.split_once(&marker).unwrap_or_else(|| panic!("SLICES.md has no {marker}")).1;
    let fence_open = after.find("```").expect("a fenced block after the marker");
    let body_start = fence_open + after[fence_open..].find('\n').expect("fence line") + 1;
    let body_len = after[body_start..].find("```").expect("closing fence");
    after[body_start..body_start + body_len].to_owned()
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(command: &mut Command) {
    let status = command.status().expect("run a command");
    assert!(status.success(), "{command:?} failed");
}

/// The greeting word the node's app port answers `/hello/world` with (`{"<greeting>": "world", "node": ..}`).
fn hello(c: &LocalCluster, node: usize) -> Option<String> {
    let answer = http(c.nodes[node].app, "GET", "/hello/world", b"").ok().filter(|a| a.status == 200)?;
    let value = answer.json();
    let object = value.as_object()?;
    object.iter().find(|(_, v)| *v == "world").map(|(k, _)| k.clone())
}

#[test]
fn the_guide_takes_a_new_crate_to_a_deployed_slice_on_a_cluster() {
    let guide = std::fs::read_to_string(workspace_root().join("SLICES.md")).expect("read SLICES.md");
    let dir = std::env::temp_dir().join(format!("aether-guide-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // 1. The guide's command, run from the checkout.
    let create = guide_block(&guide, "new-slice");
    assert!(create.contains("cargo xtask new-slice greeter --dir ~/slices"), "{create}");
    let dir_text = dir.display().to_string();
    run(cargo().current_dir(workspace_root()).args([
        "run",
        "--quiet",
        "-p",
        "xtask",
        "--",
        "new-slice",
        "greeter",
        "--dir",
        &dir_text,
    ]));
    let crate_dir = dir.join("greeter");
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains(&workspace_root().join("aether-sdk").display().to_string()), "{manifest}");

    // 2-3. The guide's slice, its tests, the release build (a target folder kept between runs).
    std::fs::write(crate_dir.join("src/lib.rs"), guide_block(&guide, "lib-rs")).unwrap();
    let target = workspace_root().join("target").join("slices-build").join("guide");
    run(cargo().current_dir(&crate_dir).env("CARGO_TARGET_DIR", &target).args(["test", "--quiet"]));
    run(cargo().current_dir(&crate_dir).env("CARGO_TARGET_DIR", &target).args(["build", "--release", "--quiet"]));
    let library = std::fs::read(target.join("release/libgreeter.so")).unwrap();

    // 4. Upload and blueprint, as the guide shows them.
    let upload = guide_block(&guide, "upload");
    assert!(upload.contains("localhost:8080/api/artifacts/com.example/greeter/1.0.0"), "{upload}");
    let aetherd = Path::new(env!("CARGO_BIN_EXE_aetherd"));
    let c = devcluster::start_with_examples(3, "guide-cluster", aetherd, SETTLE).unwrap();
    let uploaded = http(c.nodes[0].management, "POST", "/api/artifacts/com.example/greeter/1.0.0", &library).unwrap();
    assert_eq!(uploaded.status, 201, "{}", uploaded.text());
    let blueprint = guide_block(&guide, "blueprint");
    let headers = [("Content-Type", "application/toml")];
    let posted = http_with(c.nodes[0].management, "POST", "/api/blueprints", &headers, blueprint.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    let expected = "hello";
    wait_for(Duration::from_secs(60), || (0..3).all(|i| hello(&c, i).as_deref() == Some(expected)))
        .unwrap_or_else(|_| panic!("not served: {:?}", (0..3).map(|i| hello(&c, i)).collect::<Vec<_>>()));

    // 5. Live config: the same blueprint with another greeting reaches the running instances.
    let changed = guide_block(&guide, "blueprint-config");
    assert!(changed.contains("greeting = \"bonjour\""), "{changed}");
    let posted = http_with(c.nodes[1].management, "POST", "/api/blueprints", &headers, changed.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    let expected = "bonjour";
    wait_for(Duration::from_secs(30), || (0..3).all(|i| hello(&c, i).as_deref() == Some(expected)))
        .unwrap_or_else(|_| panic!("not reconfigured: {:?}", (0..3).map(|i| hello(&c, i)).collect::<Vec<_>>()));
    let _ = std::fs::remove_dir_all(&dir);
}
