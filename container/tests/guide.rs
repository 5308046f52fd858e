//! SLICES.md, the `cargo new` variant: `cargo new --lib`, the guide's `Cargo.toml` and `src/lib.rs`,
//! `cargo build --release`, the Maven-layout copy, then load, start and call it in a container.

use std::path::{Path, PathBuf};
use std::process::Command;

use aether_sdk::RequestBuilder;
use container::{Artifact, Container, ContainerConfig};

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("container sits in the workspace")
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

fn run(command: &mut Command) {
    let status = command.status().expect("run a command");
    assert!(status.success(), "{command:?} failed");
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

#[test]
fn the_slices_guide_builds_a_slice_the_container_runs() {
    let guide = std::fs::read_to_string(workspace_root().join("SLICES.md")).expect("read SLICES.md");
    // Outside any workspace, as a slice author's crate would be.
    let dir = std::env::temp_dir().join(format!("aether-guide-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    run(cargo().current_dir(&dir).args(["new", "--lib", "--vcs", "none", "--quiet", "greeter"]));
    let crate_dir = dir.join("greeter");

    let sdk_path = workspace_root().join("aether-sdk");
    let manifest = guide_block(&guide, "cargo-toml").replace("../aether/aether-sdk", &sdk_path.display().to_string());
    std::fs::write(crate_dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(crate_dir.join("src/lib.rs"), guide_block(&guide, "lib-rs")).unwrap();
    // A target folder kept between runs, so the SDK is not rebuilt every time.
    let target = workspace_root().join("target").join("slices-build").join("guide");
    run(cargo().current_dir(&crate_dir).env("CARGO_TARGET_DIR", &target).args(["build", "--release", "--quiet"]));

    let repo = dir.join("repo");
    let installed: PathBuf = repo.join("com/example/greeter/1.0.0/greeter-1.0.0.so");
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::copy(target.join("release/libgreeter.so"), &installed).unwrap();
    // The guide's `sha256sum greeter-1.0.0.so > greeter-1.0.0.so.sha256`.
    let checksum = std::process::Command::new("sha256sum")
        .arg("greeter-1.0.0.so")
        .current_dir(installed.parent().unwrap())
        .output()
        .unwrap();
    assert!(checksum.status.success());
    std::fs::write(installed.with_extension("so.sha256"), checksum.stdout).unwrap();

    let container = Container::new(ContainerConfig::new(&repo, "node-g")).unwrap();
    let artifact = Artifact::parse("com.example:greeter:1.0.0").unwrap();
    let id = container.deploy(&artifact, vec![("greeting".into(), "hello".into())]).unwrap_or_else(|e| panic!("{e}"));
    let handle = container.handle(id).unwrap();
    assert_eq!(handle.info().routes[0].path, "/hello/{name}");
    let request = RequestBuilder::new().param("name", "world").encode().unwrap();
    let answer = handle.call("hello", &request).unwrap();
    assert_eq!(answer.body_text(), r#"{"hello":"world","node":"node-g"}"#);
    container.set_config(id, vec![("greeting".into(), "hi".into())]).unwrap();
    let answer = handle.call("hello", &request).unwrap();
    assert_eq!(answer.body_text(), r#"{"hi":"world","node":"node-g"}"#);
    container.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
