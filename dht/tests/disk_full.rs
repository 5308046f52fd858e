//! The disk store on a full filesystem (a small tmpfs; mounting one needs root, so elsewhere this test says
//! it did not run): a write that does not fit fails and leaves nothing behind, so smaller writes that fit
//! still succeed.

use dht::{DiskStore, Entry, Store, Version};
use std::path::Path;
use std::process::Command;

struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmpfs(dir: &Path, size: &str) -> Option<Mounted> {
    std::fs::create_dir_all(dir).ok()?;
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output();
    match mounted {
        Ok(out) if out.status.success() => Some(Mounted(dir.to_path_buf())),
        _ => {
            let _ = std::fs::remove_dir_all(dir);
            None
        }
    }
}

fn live(stamp: u64, bytes: usize) -> Entry {
    Entry { version: Version { stamp, writer: 1 }, value: Some(vec![7; bytes]) }
}

#[test]
fn a_write_that_does_not_fit_leaves_room_for_the_next() {
    let dir = std::env::temp_dir().join(format!("aether-dht-full-{}", std::process::id()));
    let Some(_mounted) = tmpfs(&dir, "128k") else {
        eprintln!("not run: mounting a tmpfs needs root");
        return;
    };
    let mut store = DiskStore::open(&dir).unwrap();
    assert!(store.put("big", live(1, dht::VALUE_BYTES_MAX)).is_err(), "a value larger than the disk was stored");
    for i in 0..4 {
        let key = format!("small-{i}");
        assert_eq!(store.put(&key, live(2, 8 * 1024)), Ok(true), "{key} did not fit after the failed write");
    }
    let left: Vec<_> = std::fs::read_dir(dir.join("tmp")).unwrap().collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}
