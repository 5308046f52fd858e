//! Every verb whose route this build serves, against a live 3-node cluster, in table and `--json` form
//! (the JSON parsed and its fields checked), with refusals exiting 1 and usage mistakes exiting 2.

mod common;

use common::*;
use devcluster::wait_for;

#[test]
fn cluster_verbs_answer_in_tables_and_json() {
    let c = start(3, "verbs");
    // A leader is known once a slot has been decided with every node; wait for it, as an operator would.
    let led = wait_for(SETTLE, || at_json(&c, 0, &["status"])["leader"].is_string());
    assert!(led.is_ok(), "no leader: {:?}", at(&c, 0, &["status"]));

    let status = at(&c, 0, &["status"]).ok();
    assert!(status.stdout.contains("leader:") && status.stdout.contains("quorum:            yes"), "{status:?}");
    for id in ["node-1", "node-2", "node-3"] {
        assert!(status.stdout.contains(id), "{status:?}");
    }
    let status = at_json(&c, 0, &["status"]);
    assert_eq!((status["node"].as_str(), status["quorum"].as_bool()), (Some("node-1"), Some(true)), "{status}");
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3), "{status}");
    assert!(status["leader"].is_string(), "{status}");

    let health = at(&c, 1, &["health"]).ok();
    assert!(health.stdout.contains("state:            ready"), "{health:?}");
    assert!(health.stdout.contains("2 of 2"), "{health:?}");
    let health = at_json(&c, 1, &["health"]);
    assert_eq!((health["node"].as_str(), health["ready"].as_bool()), (Some("node-2"), Some(true)));

    let nodes = at(&c, 2, &["nodes"]).ok();
    let lines: Vec<&str> = nodes.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{nodes:?}");
    assert!(lines[0].starts_with("NODE") && nodes.stdout.contains("node-3 (this)"), "{nodes:?}");
    let nodes = at_json(&c, 2, &["nodes"]);
    assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(3));
    assert!(nodes["nodes"].as_array().unwrap().iter().any(|n| n["self"] == true && n["id"] == "node-3"));
}

#[test]
fn deploy_kv_and_artifact_verbs_work_and_refusals_exit_1() {
    let c = start(3, "deploy");
    push_examples(&c);
    let dir = temp_dir("deploy-files");
    let shop = dir.join("shop.toml");
    std::fs::write(&shop, SHOP).unwrap();

    // A refused blueprint: exit 1 with the server's error, line and field; nothing stored.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\n[[slices]]\nartifact = \"org.aether.examples:echo:1.0.0\"\ncolour = \"blue\"\n",
    )
    .unwrap();
    let refused = at(&c, 0, &["blueprint", "apply", bad.to_str().unwrap()]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("invalid_blueprint") && refused.stderr.contains("line 4"), "{refused:?}");
    let refused = at(&c, 0, &["--json", "blueprint", "apply", bad.to_str().unwrap()]);
    assert_eq!(refused.code, 1, "{refused:?}");
    let body = refused.json();
    assert_eq!((body["error"].as_str(), body["line"].as_u64()), (Some("invalid_blueprint"), Some(4)), "{body}");

    let applied = at(&c, 0, &["blueprint", "apply", shop.to_str().unwrap()]).ok();
    assert!(applied.stdout.starts_with("stored blueprint shop (version "), "{applied:?}");
    // The same blueprint again, from stdin, in JSON.
    let node = c.nodes[1].management.to_string();
    let again = aether_with(&["blueprint", "apply", "-", "--node", &node, "--json"], &[], SHOP.as_bytes()).ok();
    let again = again.json();
    assert_eq!(again["name"], "shop");
    assert_eq!(again["slices"].as_array().map(Vec::len), Some(4), "{again}");
    assert_eq!(again["slices"][3], "org.aether.examples:orders:1.0.0", "{again}");
    wait_deployed(&c);

    let list = at(&c, 2, &["blueprint", "list"]).ok();
    assert!(list.stdout.lines().nth(1).is_some_and(|l| l.starts_with("shop  4")), "{list:?}");
    let list = at_json(&c, 2, &["blueprint", "list"]);
    assert_eq!(list["blueprints"][0]["name"], "shop", "{list}");

    let got = at(&c, 0, &["blueprint", "get", "shop"]).ok();
    assert!(got.stdout.contains("org.aether.examples:orders:1.0.0") && got.stdout.contains(":ACTIVE"), "{got:?}");
    let toml = at(&c, 0, &["blueprint", "get", "shop", "--toml"]).ok();
    assert_eq!(toml.stdout, SHOP);
    let got = at_json(&c, 0, &["blueprint", "get", "shop"]);
    assert_eq!(got["slices"].as_array().map(Vec::len), Some(4), "{got}");
    assert!(fully_active(&got), "{got}");
    let missing = at(&c, 0, &["blueprint", "get", "nosuch"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("404 not_found"), "{missing:?}");

    let slices = at(&c, 1, &["slices"]).ok();
    assert_eq!(slices.stdout.lines().filter(|l| l.contains(" ACTIVE ")).count(), 5, "{slices:?}");
    let slices = at_json(&c, 1, &["slices"]);
    let all = slices["slices"].as_array().unwrap();
    assert_eq!(all.len(), 5, "{slices}");
    assert!(all.iter().all(|s| s["state"] == "ACTIVE" && s["node"].is_string()), "{slices}");

    kv_verbs(&c);

    let deleted = at(&c, 2, &["blueprint", "delete", "shop"]).ok();
    assert!(deleted.stdout.starts_with("deleted blueprint shop"), "{deleted:?}");
    let gone = at(&c, 2, &["--json", "blueprint", "delete", "shop"]);
    assert_eq!(gone.code, 1, "{gone:?}");
    assert_eq!(gone.json()["error"], "not_found");
    let emptied = wait_for(SETTLE, || at_json(&c, 0, &["slices"])["slices"].as_array().is_some_and(Vec::is_empty));
    assert!(emptied.is_ok(), "{:?}", at(&c, 0, &["slices"]));
    assert!(at(&c, 0, &["slices"]).ok().stdout.contains("no slice instances"));

    let _ = std::fs::remove_dir_all(&dir);
}

fn kv_verbs(c: &devcluster::LocalCluster) {
    let put = at(c, 0, &["kv", "put", "user/cli/greeting", "hello world"]).ok();
    assert!(put.stdout.starts_with("user/cli/greeting: version "), "{put:?}");
    let put = at_json(c, 1, &["kv", "put", "user/cli/other", "1"]);
    assert!(put["version"].as_u64().is_some_and(|v| v > 0), "{put}");
    // From stdin through --file -, binary.
    let node = c.nodes[2].management.to_string();
    aether_with(&["--node", &node, "kv", "put", "user/cli/bin", "--file", "-"], &[], &[0, 1, 2, 255]).ok();

    // Piped, the value is printed as stored: no newline added.
    assert_eq!(at(c, 2, &["kv", "get", "user/cli/greeting"]).ok().stdout, "hello world");
    let got = at_json(c, 2, &["kv", "get", "user/cli/greeting", "--stale"]);
    assert_eq!((got["key"].as_str(), got["value"].as_str()), (Some("user/cli/greeting"), Some("hello world")));
    let raw = std::process::Command::new(env!("CARGO_BIN_EXE_aether"))
        .args(["--node", &node, "kv", "get", "user/cli/bin"])
        .output()
        .unwrap();
    assert_eq!(raw.stdout, [0, 1, 2, 255]);

    let list = at(c, 0, &["kv", "list", "user/cli/"]).ok();
    assert_eq!(list.stdout.lines().count(), 4, "{list:?}");
    assert!(list.stdout.contains("<4 bytes, binary>") && list.stdout.contains("hello world"), "{list:?}");
    let list = at_json(c, 0, &["kv", "list", "user/cli/"]);
    assert_eq!(list["count"], 3, "{list}");

    // Compare-and-set on a key that exists: 409, exit 1. A namespace the KV routes refuse: 403, exit 1.
    let conflict = at(c, 0, &["kv", "put", "user/cli/greeting", "x", "--if-version", "0"]);
    assert_eq!(conflict.code, 1, "{conflict:?}");
    assert!(conflict.stderr.contains("409"), "{conflict:?}");
    let forbidden = at(c, 0, &["kv", "put", "routes/GET/x", "x"]);
    assert_eq!(forbidden.code, 1, "{forbidden:?}");
    assert!(forbidden.stderr.contains("403"), "{forbidden:?}");

    assert!(at(c, 1, &["kv", "delete", "user/cli/greeting"]).ok().stdout.contains("deleted"));
    at_json(c, 1, &["kv", "delete", "user/cli/other"]);
    let missing = at(c, 1, &["--json", "kv", "get", "user/cli/greeting"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert_eq!(missing.json()["error"], "not_found");
    assert_eq!(at(c, 1, &["kv", "delete", "user/cli/greeting"]).code, 1);
}

#[test]
fn usage_mistakes_exit_2_before_anything_is_sent() {
    let dir = temp_dir("usage");
    let missing = dir.join("missing.toml");
    let library = dir.join("lib.so");
    std::fs::write(&library, b"not really").unwrap();
    // The node address is dead: a usage mistake must be found before any connection is tried.
    let dead = "127.0.0.1:1";
    for args in [
        vec!["nosuchverb"],
        vec!["kv"],
        vec!["kv", "put", "user/a"],
        vec!["blueprint", "apply"],
        vec!["blueprint", "apply", missing.to_str().unwrap()],
        vec!["artifact", "push", library.to_str().unwrap(), "only:two"],
        vec!["metrics", "--history", "3h"],
        vec!["log-level", "set", "consensus", "loud"],
        vec!["--node", "ftp://x:1", "status"],
        vec!["--node", "host:notaport", "status"],
    ] {
        let mut all = vec!["--node", dead];
        all.extend(args.iter().copied());
        let run = aether(&all);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(!run.stderr.is_empty() && !run.stderr.contains("reached"), "{args:?}: {run:?}");
    }
    let help = aether(&["kv", "put", "--help"]).ok();
    assert!(help.stdout.contains("--if-version") && help.stdout.contains("--file"), "{help:?}");
    let help = aether(&["help", "events"]).ok();
    assert!(help.stdout.contains("--follow") && help.stdout.contains("--since"), "{help:?}");
    assert!(aether(&["--help"]).ok().stdout.contains("Exit codes"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish() {
    let bash = aether(&["completion", "bash"]).ok().stdout;
    assert!(bash.contains("complete -F") && bash.contains("aether") && bash.contains("log-level"), "{bash}");
    let zsh = aether(&["completion", "zsh"]).ok().stdout;
    assert!(zsh.starts_with("#compdef aether"), "{zsh}");
    let fish = aether(&["completion", "fish"]).ok().stdout;
    assert!(fish.contains("complete -c aether") && fish.contains("blueprint"), "{fish}");
    if std::process::Command::new("bash").arg("--version").output().is_ok() {
        let dir = temp_dir("completion");
        let script = dir.join("aether.bash");
        std::fs::write(&script, &bash).unwrap();
        let check = std::process::Command::new("bash").arg("-n").arg(&script).output().unwrap();
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
