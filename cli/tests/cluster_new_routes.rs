//! Verbs whose management routes are added alongside this tool (routes, blueprint validate and status,
//! artifact list, events, metrics, invocations, log levels, config), against a live 3-node cluster with a
//! deployed blueprint, in table and `--json` form, written to the routes' agreed JSON shapes.
//!
//! A route the `aetherd` under test does not serve (404 "no such path", or 405) fails the test.

mod common;

use common::*;
use devcluster::{http, wait_for, LocalCluster};
use serde_json::Value;
use std::io::BufRead;
use std::time::Duration;

/// A cluster with the shop blueprint deployed (through the CLI) and some calls to echo made.
fn deployed(name: &str) -> LocalCluster {
    let c = start(3, name);
    push_examples(&c);
    let node = c.nodes[0].management.to_string();
    aether_with(&["--node", &node, "blueprint", "apply", "-"], &[], SHOP.as_bytes()).ok();
    wait_deployed(&c);
    let served = wait_for(SETTLE, || {
        (0..3).all(|n| http(c.nodes[n].app, "GET", "/echo/hello", b"").is_ok_and(|r| r.status == 200))
    });
    assert!(served.is_ok(), "echo is not served");
    for n in 0..30 {
        let _ = http(c.nodes[n % 3].app, "GET", "/echo/cli", b"");
    }
    c
}

#[test]
fn api_route_verbs_routes_validate_blueprint_status_and_artifact_list() {
    let c = deployed("api-routes");
    if serves(&c, "GET", "/api/routes", b"") {
        let routes = at_json(&c, 1, &["routes"]);
        let all = routes["routes"].as_array().unwrap();
        let echo = all.iter().find(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/echo"))).unwrap();
        assert_eq!(echo["artifact"], "org.aether.examples:echo:1.0.0", "{routes}");
        assert_eq!(echo["instances"].as_array().map(Vec::len), Some(2), "{routes}");
        let table = at(&c, 1, &["routes"]).ok();
        assert!(
            table.stdout.starts_with("METHOD") && table.stdout.contains("org.aether.examples:echo:1.0.0"),
            "{table:?}"
        );
    }

    if serves(&c, "POST", "/api/blueprints/validate", SHOP.as_bytes()) {
        let dir = temp_dir("validate");
        let file = dir.join("dryrun.toml");
        std::fs::write(&file, SHOP.replace("name = \"shop\"", "name = \"dryrun\"")).unwrap();
        let file = file.to_str().unwrap();
        // Every artifact already belongs to shop, so validate the shop blueprint itself: nothing changes.
        let shop = dir.join("shop.toml");
        std::fs::write(&shop, SHOP).unwrap();
        let valid = at_json(&c, 0, &["blueprint", "validate", shop.to_str().unwrap()]);
        assert_eq!((valid["valid"].as_bool(), valid["name"].as_str()), (Some(true), Some("shop")), "{valid}");
        assert_eq!(valid["slices"].as_array().map(Vec::len), Some(4), "{valid}");
        assert!(valid["placement"].as_array().is_some_and(|p| p.iter().any(|x| x["instances"] == 2)), "{valid}");
        let table = at(&c, 0, &["blueprint", "validate", shop.to_str().unwrap()]).ok();
        assert!(table.stdout.starts_with("blueprint shop is valid"), "{table:?}");
        // Refused (another blueprint runs these artifacts, or invalid): exit 1, and nothing stored.
        let refused = at(&c, 0, &["blueprint", "validate", file]);
        assert_eq!(refused.code, 1, "{refused:?}");
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "name = \"x\"\n[[slices\n").unwrap();
        let invalid = at(&c, 0, &["--json", "blueprint", "validate", bad.to_str().unwrap()]);
        assert_eq!(invalid.code, 1, "{invalid:?}");
        assert_eq!(invalid.json()["error"], "invalid_blueprint");
        let list = at_json(&c, 0, &["blueprint", "list"]);
        assert_eq!(list["blueprints"].as_array().map(Vec::len), Some(1), "{list}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    if serves(&c, "GET", "/api/blueprints/shop/status", b"") {
        let running = wait_for(SETTLE, || at_json(&c, 2, &["blueprint", "status", "shop"])["state"] == "running");
        assert!(running.is_ok(), "{:?}", at(&c, 2, &["blueprint", "status", "shop"]));
        let status = at_json(&c, 2, &["blueprint", "status", "shop"]);
        let slices = status["slices"].as_array().unwrap();
        assert_eq!(slices.len(), 4, "{status}");
        assert!(slices.iter().all(|s| s["active"] == s["desired"]), "{status}");
        let table = at(&c, 2, &["blueprint", "status", "shop"]).ok();
        assert!(
            table.stdout.starts_with("blueprint shop (version ") && table.stdout.contains("): running"),
            "{table:?}"
        );
        assert_eq!(at(&c, 2, &["blueprint", "status", "nosuch"]).code, 1);
    }

    if serves(&c, "GET", "/api/artifacts", b"") {
        let list = at_json(&c, 1, &["artifact", "list"]);
        let (coords, file) = EXAMPLES[0];
        // The cluster starts with the examples in each node's folder (seeds the catalog does not know).
        let mut listed = list["artifacts"].as_array().unwrap().iter().chain(list["local_only"].as_array().unwrap());
        let echo = listed.find(|a| a["artifact"] == coords).cloned();
        let echo = echo.unwrap_or_else(|| panic!("{list}"));
        assert_eq!(echo["sha256"], sha256_hex(&std::fs::read(example_library(file)).unwrap()).as_str());
        let table = at(&c, 1, &["artifact", "list"]).ok();
        assert_eq!(table.stdout.lines().filter(|l| l.starts_with("org.aether.examples:")).count(), 4, "{table:?}");
    }
}

/// Follows the event stream in the background: its lines arrive on the returned channel.
fn follow_events(c: &LocalCluster) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aether"))
        .args(["--node", &c.nodes[1].management.to_string(), "events", "--follow", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                return;
            }
        }
    });
    (child, lines)
}

fn events_and_log_levels(c: &LocalCluster) {
    if serves(c, "GET", "/api/events", b"") {
        // The event is recorded as the node observes the change, which may come after the slices serve.
        let applied = |page: &serde_json::Value| {
            page["events"].as_array().is_some_and(|events| events.iter().any(|e| e["kind"] == "blueprint_applied"))
        };
        let _ = wait_for(SETTLE, || applied(&at_json(c, 0, &["events", "--since", "0", "--limit", "1000"])));
        let page = at_json(c, 0, &["events", "--since", "0", "--limit", "1000"]);
        let events = page["events"].as_array().unwrap();
        assert!(applied(&page), "{page}");
        assert!(events.windows(2).all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()), "{page}");
        assert!(page["next"].is_u64(), "{page}");
        let one = at_json(c, 0, &["events", "--limit", "1"]);
        assert!(one["events"].as_array().is_some_and(|e| e.len() <= 1), "{one}");
        let table = at(c, 0, &["events", "--since", "1h"]).ok();
        assert!(table.stdout.starts_with("SEQ") && table.stdout.contains("blueprint_applied"), "{table:?}");
        assert_eq!(at(c, 0, &["events", "--since", "yesterday"]).code, 1, "a bad --since is the server's 400");
    }
    let streams = serves(c, "GET", "/api/events?limit=1", b"") && serves_stream(c);
    let followed = streams.then(|| follow_events(c));
    if !serves(c, "GET", "/api/log-levels", b"") {
        return;
    }
    let set = at_json(c, 0, &["log-level", "set", "consensus", "debug"]);
    assert_eq!((set["target"].as_str(), set["level"].as_str()), (Some("consensus"), Some("debug")), "{set}");
    let table = at(c, 1, &["log-level", "set", "aetherd::app", "trace"]).ok();
    assert_eq!(table.stdout, "aetherd::app: trace\n");
    let levels = at_json(c, 2, &["log-level", "get"]);
    assert_eq!(levels["targets"]["consensus"], "debug", "{levels}");
    assert!(levels["default"].is_string(), "{levels}");
    let table = at(c, 2, &["log-level", "get"]).ok();
    assert!(table.stdout.starts_with("default: ") && table.stdout.contains("aetherd::app  trace"), "{table:?}");
    let reset = at_json(c, 0, &["log-level", "reset", "consensus"]);
    assert_eq!((reset["target"].as_str(), reset["level"].is_null()), (Some("consensus"), true), "{reset}");
    at(c, 0, &["log-level", "reset", "aetherd::app"]).ok();
    assert_eq!(at(c, 0, &["log-level", "reset", "consensus"]).code, 1, "not set any more: 404");
    assert!(at_json(c, 0, &["log-level", "get"])["targets"].get("consensus").is_none());

    if let Some((mut child, lines)) = followed {
        // The log-level changes above were events; the follower saw them as JSON lines.
        let mut seen = Vec::new();
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(10)) {
            let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            seen.push(event["kind"].as_str().unwrap_or("").to_string());
            if seen.iter().filter(|k| *k == "log_level_changed").count() >= 2 {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen.iter().filter(|k| *k == "log_level_changed").count() >= 2, "{seen:?}");
    }
}

/// Whether `/api/events/stream` answers with an event stream.
fn serves_stream(c: &LocalCluster) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(c.nodes[1].management) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /api/events/stream HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut head = [0u8; 512];
    let n = s.read(&mut head).unwrap_or(0);
    let text = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
    let ok = text.starts_with("http/1.1 200") && text.contains("text/event-stream");
    assert!(ok, "GET /api/events/stream is not served by the aetherd under test: {text}");
    ok
}

fn metrics_and_invocations(c: &LocalCluster) {
    if serves(c, "GET", "/api/metrics", b"") {
        let all = wait_for(SETTLE, || at_json(c, 0, &["metrics"])["nodes"].as_array().is_some_and(|n| n.len() == 3));
        assert!(all.is_ok(), "{:?}", at(c, 0, &["metrics"]));
        let metrics = at_json(c, 0, &["metrics"]);
        assert_eq!(metrics["node"], "node-1", "{metrics}");
        for n in metrics["nodes"].as_array().unwrap() {
            assert!(n["rss_bytes"].as_u64().is_some_and(|b| b > 0), "{n}");
            assert!(n["cpu_percent"].is_number() && n["consensus"]["applied_slot"].is_u64(), "{n}");
        }
        let table = at(c, 0, &["metrics"]).ok();
        assert_eq!(table.stdout.lines().filter(|l| l.starts_with("node-")).count(), 3, "{table:?}");
    }
    if serves(c, "GET", "/api/metrics/history", b"") {
        let history = at_json(c, 1, &["metrics", "--history", "5m"]);
        assert_eq!(history["range"], "5m", "{history}");
        assert!(history["step_ms"].is_u64() && history["nodes"].is_object(), "{history}");
        let table = at(c, 1, &["metrics", "--history", "15m"]).ok();
        assert!(table.stdout.starts_with("range 15m"), "{table:?}");
    }
    if serves(c, "GET", "/api/invocation-metrics", b"") {
        let echo = "org.aether.examples:echo:1.0.0";
        let counted = wait_for(SETTLE, || {
            let v = at_json(c, 2, &["invocations", "--artifact", echo]);
            v["invocations"]
                .as_array()
                .is_some_and(|i| i.iter().map(|x| x["calls"].as_u64().unwrap_or(0)).sum::<u64>() >= 30)
        });
        assert!(counted.is_ok(), "{:?}", at(c, 2, &["--json", "invocations"]));
        let all = at_json(c, 2, &["invocations"]);
        let first = &all["invocations"][0];
        assert!(first["latency_us"]["p99"].is_number() && first["nodes"].is_array(), "{all}");
        let table = at(c, 2, &["invocations"]).ok();
        assert!(table.stdout.starts_with("ARTIFACT") && table.stdout.contains(echo), "{table:?}");
    }
    if serves(c, "GET", "/api/invocation-metrics/slow", b"") {
        let slow = at_json(c, 0, &["invocations", "--slow", "--limit", "5"]);
        assert!(slow["threshold_ms"].is_u64() && slow["slow"].as_array().is_some_and(|s| s.len() <= 5), "{slow}");
        let table = at(c, 0, &["invocations", "--slow"]).ok();
        assert!(table.stdout.starts_with("calls slower than"), "{table:?}");
    }
}

fn config_verbs(c: &LocalCluster) {
    if !serves(c, "GET", "/api/config", b"") {
        return;
    }
    let config = at_json(c, 0, &["config", "get"]);
    let settable = config["settable"].as_array().cloned().unwrap_or_default();
    let table = at(c, 0, &["config", "get"]).ok();
    assert!(table.stdout.starts_with("KEY"), "{table:?}");
    let Some(setting) = settable.iter().find(|s| s["default"].is_u64()) else {
        panic!("no numeric settable key: {config}");
    };
    let key = setting["key"].as_str().unwrap();
    let value = setting["default"].as_u64().unwrap().to_string();
    let set = at_json(c, 0, &["config", "set", key, &value]);
    assert_eq!((set["key"].as_str(), set["node"].is_null()), (Some(key), true), "{set}");
    let per_node = at_json(c, 1, &["config", "set", key, &value, "--node-id", "node-2"]);
    assert_eq!(per_node["node"], "node-2", "{per_node}");
    let now = at_json(c, 2, &["config", "get", key]);
    assert_eq!(now["cluster"][key].to_string(), value, "{now}");
    assert_eq!(now["nodes"]["node-2"][key].to_string(), value, "{now}");
    let one = at(c, 2, &["config", "get", key]).ok();
    assert!(one.stdout.contains("per-node overrides") && one.stdout.contains("node-2"), "{one:?}");
    at(c, 0, &["config", "unset", key, "--node-id", "node-2"]).ok();
    at_json(c, 0, &["config", "unset", key]);
    assert_eq!(at(c, 0, &["config", "unset", key]).code, 1, "not set any more: 404");
    let unknown = at(c, 0, &["--json", "config", "set", "no_such_setting", "1"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.json()["detail"].is_string());
}

#[test]
fn observing_verbs_events_metrics_invocations_log_levels_and_config() {
    let c = deployed("observe");
    events_and_log_levels(&c);
    metrics_and_invocations(&c);
    config_verbs(&c);
}
