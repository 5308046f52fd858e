//! The disk store's tests: round trips, restarts, damaged and hostile files, digests against `MemStore`.
use super::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("aether-disk-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn v(stamp: u64) -> Version {
    Version { stamp, writer: 7 }
}

fn live(stamp: u64, value: &[u8]) -> Entry {
    Entry { version: v(stamp), value: Some(value.to_vec()) }
}

fn file_of(store: &DiskStore, key: &str) -> PathBuf {
    let meta = store.meta(key).expect("indexed");
    store.path(meta.file)
}

#[test]
fn round_trip_of_values_and_tombstones() {
    let tmp = TempDir::new("round");
    let mut s = DiskStore::open(&tmp.0).unwrap();
    assert!(s.put("a", live(1, b"hello")).unwrap());
    assert!(s.put("b", Entry { version: v(2), value: None }).unwrap());
    assert_eq!(s.get("a").unwrap(), Some(live(1, b"hello")));
    assert_eq!(s.get("b").unwrap(), Some(Entry { version: v(2), value: None }));
    assert_eq!(s.get("c").unwrap(), None);
    assert_eq!(s.usage(), (2, 5));
    s.remove("a").unwrap();
    assert_eq!(s.get("a").unwrap(), None);
    assert_eq!(s.usage(), (1, 0));
    assert!(file_of(&s, "b").exists());
}

#[test]
fn restart_keeps_entries_and_digests() {
    let tmp = TempDir::new("restart");
    let (digests, partitions) = {
        let mut s = DiskStore::open(&tmp.0).unwrap();
        for i in 0..50u64 {
            s.put(&format!("key-{i}"), live(i + 1, &i.to_le_bytes())).unwrap();
        }
        s.put("gone", Entry { version: v(9), value: None }).unwrap();
        let parts = s.partitions();
        (parts.iter().map(|p| s.digest(*p)).collect::<Vec<_>>(), parts)
    };
    let mut s = DiskStore::open(&tmp.0).unwrap();
    assert_eq!(s.partitions(), partitions);
    assert_eq!(partitions.iter().map(|p| s.digest(*p)).collect::<Vec<_>>(), digests);
    assert_eq!(s.get("key-7").unwrap(), Some(live(8, &7u64.to_le_bytes())));
    assert_eq!(s.get("gone").unwrap(), Some(Entry { version: v(9), value: None }));
    assert_eq!(s.usage(), (51, 50 * 8));
    assert_eq!(s.corrupt_dropped(), 0);
}

#[test]
fn newer_version_wins_and_older_is_ignored() {
    let tmp = TempDir::new("newer");
    let mut s = DiskStore::open(&tmp.0).unwrap();
    assert!(s.put("k", live(5, b"five")).unwrap());
    assert!(!s.put("k", live(4, b"four")).unwrap());
    assert!(!s.put("k", live(5, b"other")).unwrap());
    assert_eq!(s.get("k").unwrap(), Some(live(5, b"five")));
    let higher_writer = Entry { version: Version { stamp: 5, writer: 8 }, value: Some(b"w8".to_vec()) };
    assert!(s.put("k", higher_writer.clone()).unwrap());
    assert_eq!(s.get("k").unwrap(), Some(higher_writer));
    assert!(s.put("k", Entry { version: v(6), value: None }).unwrap());
    assert_eq!(s.get("k").unwrap(), Some(Entry { version: v(6), value: None }));
    assert_eq!(s.usage(), (1, 0));
    drop(s);
    let mut s = DiskStore::open(&tmp.0).unwrap();
    assert_eq!(s.get("k").unwrap(), Some(Entry { version: v(6), value: None }));
}

#[test]
fn corrupt_byte_is_detected_dropped_and_counted() {
    let tmp = TempDir::new("corrupt");
    let mut s = DiskStore::open(&tmp.0).unwrap();
    s.put("k", live(1, b"precious bytes")).unwrap();
    s.put("other", live(1, b"fine")).unwrap();
    let partition = Ring::partition_of("k");
    let path = file_of(&s, "k");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    assert_eq!(s.get("k").unwrap(), None);
    assert_eq!(s.corrupt_dropped(), 1);
    assert!(s.versions(partition, None, 10).iter().all(|(k, _)| k != "k"));
    assert!(!path.exists());
    assert_eq!(s.get("other").unwrap(), Some(live(1, b"fine")));
}

#[test]
fn scrub_finds_a_corrupt_value_without_a_get() {
    let tmp = TempDir::new("scrub");
    let mut s = DiskStore::open(&tmp.0).unwrap();
    for i in 0..20 {
        s.put(&format!("k{i}"), live(1, b"value")).unwrap();
    }
    let path = file_of(&s, "k3");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    let mut dropped = Vec::new();
    for _ in 0..5 {
        dropped.extend(s.scrub(7));
    }
    assert_eq!(dropped, vec!["k3".to_string()]);
    assert_eq!(s.usage().0, 19);
}

#[test]
fn torn_file_is_detected_at_get_and_at_open() {
    let tmp = TempDir::new("torn");
    let mut s = DiskStore::open(&tmp.0).unwrap();
    s.put("a", live(1, &[9u8; 1000])).unwrap();
    s.put("b", live(1, &[8u8; 1000])).unwrap();
    let (a, b) = (file_of(&s, "a"), file_of(&s, "b"));
    fs::write(&a, &fs::read(&a).unwrap()[..500]).unwrap();
    assert_eq!(s.get("a").unwrap(), None);
    assert_eq!(s.corrupt_dropped(), 1);
    drop(s);
    fs::write(&b, &fs::read(&b).unwrap()[..HEADER_BYTES - 3]).unwrap();
    let mut s = DiskStore::open(&tmp.0).unwrap();
    assert_eq!(s.corrupt_dropped(), 1);
    assert_eq!(s.get("b").unwrap(), None);
    assert_eq!(s.usage(), (0, 0));
}

#[test]
fn oversized_or_stray_files_are_not_indexed() {
    let tmp = TempDir::new("stray");
    let mut s = DiskStore::open(&tmp.0).unwrap();
    s.put("a", live(1, b"x")).unwrap();
    let path = file_of(&s, "a");
    drop(s);
    let mut bytes = fs::read(&path).unwrap();
    bytes.resize(HEADER_BYTES + KEY_BYTES_MAX + VALUE_BYTES_MAX + 1, 0);
    fs::write(&path, &bytes).unwrap();
    fs::write(path.with_file_name("not-an-entry"), b"junk").unwrap();
    let s = DiskStore::open(&tmp.0).unwrap();
    assert_eq!(s.usage(), (0, 0));
    assert!(!path.with_file_name("not-an-entry").exists());
}

#[test]
fn digest_is_independent_of_order_and_follows_changes() {
    let keys: Vec<String> = (0..200).map(|i| format!("artifact/x/{i}")).collect();
    let (t1, t2) = (TempDir::new("dig1"), TempDir::new("dig2"));
    let (mut s1, mut s2) = (DiskStore::open(&t1.0).unwrap(), DiskStore::open(&t2.0).unwrap());
    for (i, k) in keys.iter().enumerate() {
        s1.put(k, live(i as u64 + 1, b"v")).unwrap();
    }
    for (i, k) in keys.iter().enumerate().rev() {
        s2.put(k, live(1, b"old")).unwrap();
        s2.put(k, live(i as u64 + 1, b"v")).unwrap();
    }
    let mut expected: HashMap<u32, u64> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        *expected.entry(Ring::partition_of(k)).or_insert(0) ^= entry_digest(k, v(i as u64 + 1));
    }
    let mut mem = crate::MemStore::default();
    for (i, k) in keys.iter().enumerate() {
        mem.put(k, live(i as u64 + 1, b"v")).unwrap();
    }
    assert_eq!(s1.partitions(), s2.partitions());
    assert_eq!(s1.partitions(), mem.partitions());
    for p in s1.partitions() {
        assert_eq!(s1.digest(p), s2.digest(p));
        assert_eq!(s1.digest(p), expected[&p]);
        assert_eq!(s1.digest(p), mem.digest(p), "the memory store's digest");
    }
    let p = Ring::partition_of(&keys[0]);
    s2.remove(&keys[0]).unwrap();
    assert_ne!(s1.digest(p), s2.digest(p));
    s2.put(&keys[0], live(1, b"v")).unwrap();
    assert_eq!(s1.digest(p), s2.digest(p));
}

#[test]
fn versions_page_in_key_order() {
    let tmp = TempDir::new("versions");
    let mut s = DiskStore::open(&tmp.0).unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    for k in &keys {
        s.put(k, live(3, b"v")).unwrap();
    }
    for p in s.partitions() {
        let all = s.versions(p, None, usize::MAX);
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = s.versions(p, after.as_deref(), 2);
            if page.is_empty() {
                break;
            }
            after = page.last().map(|(k, _)| k.clone());
            paged.extend(page);
        }
        assert_eq!(paged, all);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    }
}

#[test]
fn hostile_sizes_are_refused() {
    let tmp = TempDir::new("sizes");
    let mut s = DiskStore::open(&tmp.0).unwrap();
    assert!(s.put("", live(1, b"v")).is_err());
    assert!(s.put(&"k".repeat(KEY_BYTES_MAX + 1), live(1, b"v")).is_err());
    assert!(s.put("big", live(1, &vec![0; VALUE_BYTES_MAX + 1])).is_err());
    assert!(s.put("max", live(1, &vec![1; VALUE_BYTES_MAX])).unwrap());
    assert_eq!(s.get("max").unwrap().and_then(|e| e.value).map(|v| v.len()), Some(VALUE_BYTES_MAX));
}
