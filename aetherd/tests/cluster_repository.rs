//! The artifact repository over real processes: uploads refused before anything is stored (not ELF, ELF but
//! no slice, a descriptor naming other coordinates, over `[artifacts] max_bytes`), a release that never
//! changes (other bytes 409, the same bytes 200), the Maven files a client reads (`maven-metadata.xml`, a
//! `.sha1` equal to `sha1sum`'s), a library served by a node that never had it (fetched from the storage
//! plane), and a delete refused while a blueprint uses the version.

mod repository_support;

use devcluster::{http, wait_for, LocalCluster};
use repository_support::{example, SETTLE};
use serde_json::Value;

const ECHO: &str = "org.aether.examples:echo:1.0.0";
const ECHO_DIR: &str = "org/aether/examples/echo/1.0.0";
const ECHO_FILE: &str = "org/aether/examples/echo/1.0.0/echo-1.0.0.so";
const COUNTER_FILE: &str = "org/aether/examples/counter/1.0.0/counter-1.0.0.so";

fn start(name: &str, extra_config: &str) -> LocalCluster {
    repository_support::start(&format!("repository-{name}"), extra_config)
}

fn call(c: &LocalCluster, node: usize, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let answer = http(c.nodes[node].management, method, path, body).unwrap();
    (answer.status, answer.body)
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// `sha1sum`'s digest of `bytes`.
fn sha1sum(bytes: &[u8]) -> String {
    let file = std::env::temp_dir().join(format!("aether-repository-sha1-{}", std::process::id()));
    std::fs::write(&file, bytes).unwrap();
    let out = std::process::Command::new("sha1sum").arg(&file).output().unwrap();
    let _ = std::fs::remove_file(&file);
    text(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

/// A real ELF shared library that is no slice (it exports no descriptor), if the system has one.
fn system_library() -> Option<Vec<u8>> {
    ["/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/aarch64-linux-gnu/libz.so.1"]
        .iter()
        .find_map(|path| std::fs::read(path).ok())
}

#[test]
fn uploads_are_checked_before_anything_is_stored_and_a_release_never_changes() {
    let echo = example(ECHO_FILE);
    let limit = echo.len() + 16;
    let c = start("checks", &format!("\n[artifacts]\nmax_bytes = {limit}\n"));
    let put = format!("/repository/{ECHO_FILE}");

    let (status, body) = call(&c, 0, "PUT", &put, b"#!/bin/sh\necho not a library\n");
    assert_eq!((status, &json(&body)["error"]), (422, &Value::from("not_a_library")), "{}", text(&body));
    if let Some(library) = system_library() {
        let (status, body) = call(&c, 0, "PUT", &put, &library);
        assert_eq!(status, 422, "an ELF library without a slice descriptor: {}", text(&body));
        assert!(text(&body).contains("aether_slice_descriptor"), "names the missing descriptor: {}", text(&body));
    }
    let (status, body) = call(&c, 0, "PUT", &put, &example(COUNTER_FILE));
    assert_eq!(status, 422, "a descriptor naming another artifact: {}", text(&body));
    assert!(text(&body).contains("counter"), "names what the library says it is: {}", text(&body));
    let mut big = echo.clone();
    big.resize(limit + 1, 0);
    let (status, body) = call(&c, 0, "PUT", &put, &big);
    assert_eq!(status, 413, "{}", text(&body));
    assert!(text(&body).contains(&limit.to_string()), "names the limit: {}", text(&body));
    for n in 0..3 {
        assert!(!c.nodes[n].data_dir.join("repository").join(ECHO_FILE).exists(), "node {n} stored a refused upload");
    }
    assert_eq!(json(&call(&c, 1, "GET", "/api/artifacts", b"").1)["artifacts"], serde_json::json!([]));

    let (status, body) = call(&c, 0, "PUT", &put, &echo);
    assert_eq!(status, 201, "{}", text(&body));
    let sha256 = json(&body)["sha256"].as_str().unwrap().to_owned();
    let (status, body) = call(&c, 1, "PUT", &put, &echo);
    assert_eq!((status, &json(&body)["unchanged"]), (200, &Value::Bool(true)), "{}", text(&body));
    let mut other = echo.clone();
    other.push(0);
    let (status, body) = call(&c, 2, "POST", "/api/artifacts/org.aether.examples/echo/1.0.0", &other);
    assert_eq!(status, 409, "{}", text(&body));
    assert!(text(&body).contains(&sha256), "names the stored sha256: {}", text(&body));

    let (status, body) = call(&c, 2, "GET", &format!("/repository/{ECHO_FILE}.sha1"), b"");
    assert_eq!((status, text(&body)), (200, sha1sum(&echo)));
    let (status, body) = call(&c, 1, "GET", "/repository/org/aether/examples/echo/maven-metadata.xml", b"");
    assert_eq!(status, 200);
    let xml = text(&body);
    assert!(xml.contains("<artifactId>echo</artifactId>") && xml.contains("<release>1.0.0</release>"), "{xml}");
    let (_, sum) = call(&c, 1, "GET", "/repository/org/aether/examples/echo/maven-metadata.xml.sha1", b"");
    assert_eq!(text(&sum), sha1sum(xml.as_bytes()));
    let (status, _) = call(&c, 0, "GET", &format!("/repository/{ECHO_DIR}/../1.0.0/echo-1.0.0.so"), b"");
    assert_eq!(status, 400);
}

/// Needs the storage plane: node 2 never had the library and reads it from the chunks.
#[test]
fn a_node_without_the_library_serves_it_and_a_used_version_is_not_deleted() {
    let c = start("serve", "");
    let echo = example(ECHO_FILE);
    let (status, body) = call(&c, 0, "PUT", &format!("/repository/{ECHO_FILE}"), &echo);
    assert_eq!(status, 201, "{}", text(&body));
    assert!(!c.nodes[2].data_dir.join("repository").join(ECHO_FILE).exists());
    let (status, body) = call(&c, 2, "GET", &format!("/repository/{ECHO_FILE}"), b"");
    assert_eq!(status, 200, "{}", text(&body));
    assert!(body == echo, "node 2 served other bytes ({} of {})", body.len(), echo.len());

    let blueprint = format!("name = \"up\"\n[[slices]]\nartifact = \"{ECHO}\"\ninstances = 1\n");
    let (status, body) = call(&c, 1, "POST", "/api/blueprints", blueprint.as_bytes());
    assert_eq!(status, 201, "{}", text(&body));
    let (status, body) = call(&c, 1, "DELETE", "/api/artifacts/org.aether.examples/echo/1.0.0", b"");
    assert_eq!((status, &json(&body)["blueprints"]), (409, &serde_json::json!(["up"])), "{}", text(&body));
    let listed = json(&call(&c, 0, "GET", "/api/artifacts", b"").1);
    assert_eq!(listed["artifacts"][0]["used_by"], serde_json::json!(["up"]), "{listed}");

    let (status, body) = call(&c, 1, "DELETE", "/api/blueprints/up", b"");
    assert!(status == 200 || status == 202, "{status} {}", text(&body));
    let (status, body) = call(&c, 0, "DELETE", &format!("/repository/{ECHO_FILE}"), b"");
    assert_eq!(status, 200, "{}", text(&body));
    assert!(!c.nodes[0].data_dir.join("repository").join(ECHO_FILE).exists(), "the node's copy goes too");
    let gone = wait_for(SETTLE, || call(&c, 2, "GET", &format!("/repository/{ECHO_FILE}"), b"").0 == 404);
    assert!(gone.is_ok());
    assert_eq!(call(&c, 1, "GET", "/repository/org/aether/examples/echo/maven-metadata.xml", b"").0, 404);

    // `cargo xtask build-slices --publish URL` uploads every example (the slices are already built there).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let url = format!("http://{}", c.nodes[1].management);
    let published = std::process::Command::new(cargo)
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", root.join("target").join("slices-build"))
        .args(["run", "--quiet", "-p", "xtask", "--", "build-slices", "--publish", &url])
        .output()
        .unwrap();
    assert!(published.status.success(), "{}", text(&published.stderr));
    let listed = json(&call(&c, 2, "GET", "/api/artifacts", b"").1);
    let coords: Vec<&str> =
        listed["artifacts"].as_array().unwrap().iter().filter_map(|a| a["artifact"].as_str()).collect();
    assert!(coords.contains(&ECHO) && coords.contains(&"org.aether.examples:echo:2.0.0"), "{listed}");
    assert!(coords.iter().all(|c| c.starts_with("org.aether.examples:")), "{listed}");
    let xml = text(&call(&c, 0, "GET", "/repository/org/aether/examples/echo/maven-metadata.xml", b"").1);
    assert!(xml.contains("<latest>2.0.0</latest>") && xml.contains("<version>1.0.0</version>"), "{xml}");
}
