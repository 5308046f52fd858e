//! What the repository and artifact cluster tests share: three nodes with empty repositories, and the example
//! slice libraries' bytes.

#![allow(dead_code)]

use devcluster::{example_slices_repo, wait_for, ClusterSpec, LocalCluster};
use std::path::PathBuf;
use std::time::Duration;

pub const SETTLE: Duration = Duration::from_secs(30);

/// Three nodes with empty repositories (under each data dir), in a temp folder named after `name`;
/// `extra_config` is appended to every node's file.
pub fn start(name: &str, extra_config: &str) -> LocalCluster {
    let dir = std::env::temp_dir().join(format!("aether-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = ClusterSpec::new(3, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")));
    let mut c = LocalCluster::prepare(spec).unwrap();
    for node in &c.nodes {
        let mut text = std::fs::read_to_string(&node.config).unwrap();
        text.push_str(extra_config);
        std::fs::write(&node.config, text).unwrap();
    }
    for i in 0..3 {
        c.start_node(i).unwrap();
    }
    let ready = wait_for(SETTLE, || (0..3).all(|i| c.health(i).is_some_and(|h| h["ready"] == true)));
    assert!(ready.is_ok(), "not ready: {}", c.log(0));
    c
}

/// The bytes of an example slice library, by its repository path.
pub fn example(file: &str) -> Vec<u8> {
    std::fs::read(example_slices_repo().unwrap().join(file)).unwrap()
}
