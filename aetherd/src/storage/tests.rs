use super::segments::segments;
use super::*;
use std::fs::OpenOptions;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aether-storage-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn last_segment(dir: &Path) -> PathBuf {
    segments(&dir.join("consensus")).unwrap().pop().unwrap().1
}

fn cut(path: &Path, bytes: u64) {
    let len = fs::metadata(path).unwrap().len();
    OpenOptions::new().write(true).open(path).unwrap().set_len(len - bytes).unwrap();
}

#[test]
fn records_survive_reopen() {
    let dir = temp_dir("reopen");
    let (mut s, recovered) = Storage::open(&dir).unwrap();
    assert!(recovered.snapshot.is_none() && recovered.records.is_empty());
    s.append(0, 1, b"zero");
    s.append(1, 1, b"one");
    s.flush().unwrap();
    drop(s);
    let (_, recovered) = Storage::open(&dir).unwrap();
    let slots: Vec<u64> = recovered.records.iter().map(|r| r.slot).collect();
    assert_eq!(slots, vec![0, 1]);
    assert_eq!(recovered.records[1].bytes, b"one");
}

#[test]
fn snapshot_drops_older_records_and_segments() {
    let dir = temp_dir("snap");
    let (mut s, _) = Storage::open(&dir).unwrap();
    for slot in 0..10 {
        s.append(slot, 1, b"x");
    }
    s.snapshot(10, b"state".to_vec()).unwrap();
    s.append(10, 1, b"after");
    s.close();
    let (_, recovered) = Storage::open(&dir).unwrap();
    assert_eq!(recovered.snapshot, Some((10, b"state".to_vec())));
    assert_eq!(recovered.records.len(), 1);
    assert_eq!(recovered.records[0].bytes, b"after");
    // The reopen created one more (empty) segment; the one before the snapshot is gone.
    assert_eq!(segments(&dir.join("consensus")).unwrap().len(), 2, "the segment before the snapshot is deleted");
}

#[test]
fn a_reboot_without_a_clean_stop_is_reported() {
    let dir = temp_dir("boot");
    let (mut s, recovered) = Storage::open(&dir).unwrap();
    assert!(!recovered.unclean_reboot, "an empty log has nothing to lose");
    assert!(!recovered.ran_before);
    s.append(0, 1, b"x");
    s.flush().unwrap();
    drop(s);
    let consensus = dir.join("consensus");
    fs::write(consensus.join("boot_id"), "another-boot").unwrap();
    let (s, recovered) = Storage::open(&dir).unwrap();
    assert!(recovered.unclean_reboot);
    assert!(recovered.ran_before);
    s.close();
    fs::write(consensus.join("boot_id"), "another-boot").unwrap();
    let (_, recovered) = Storage::open(&dir).unwrap();
    assert!(!recovered.unclean_reboot, "a clean stop before the reboot synced everything");
    assert!(!consensus.join("clean").exists(), "the clean mark is cleared while the node runs");
}

#[test]
fn torn_tail_is_cut_and_bad_snapshot_refused() {
    let dir = temp_dir("torn");
    let (mut s, _) = Storage::open(&dir).unwrap();
    s.append(0, 1, b"whole");
    s.append(1, 1, b"torn record");
    s.flush().unwrap();
    drop(s);
    let seg = segments(&dir.join("consensus")).unwrap()[0].1.clone();
    cut(&seg, 3);
    let (_, recovered) = Storage::open(&dir).unwrap();
    assert_eq!(recovered.records.len(), 1);
    fs::write(dir.join("consensus").join("snapshot"), b"AETHSNAPgarbage-garbage-garbage").unwrap();
    assert!(Storage::open(&dir).err().unwrap().contains("corrupt"));
}

#[test]
fn an_older_snapshot_written_late_never_replaces_a_newer_one() {
    let dir = temp_dir("race");
    let (mut s, _) = Storage::open(&dir).unwrap();
    for slot in 0..10 {
        s.append(slot, 1, b"x");
    }
    // The disk thread is still writing the large snapshot when the loop installs a newer one.
    s.snapshot(5, vec![7u8; 64 << 20]).unwrap();
    s.snapshot_now(10, b"newer").unwrap();
    s.append(10, 1, b"after");
    s.close();
    let (_, recovered) = Storage::open(&dir).unwrap();
    assert_eq!(recovered.snapshot, Some((10, b"newer".to_vec())));
    let slots: Vec<u64> = recovered.records.iter().map(|r| r.slot).collect();
    assert_eq!(slots, vec![10], "nothing after the newer snapshot is lost");
}

#[test]
fn a_torn_tail_of_a_segment_followed_only_by_empty_ones_is_accepted() {
    let dir = temp_dir("torn-nonlast");
    let (mut s, _) = Storage::open(&dir).unwrap();
    s.append(0, 1, b"whole");
    s.append(1, 1, b"torn record");
    s.flush().unwrap();
    let torn = last_segment(&dir);
    drop(s);
    cut(&torn, 3);
    // Empty segments after it (crashes right after opening a segment).
    File::create(segments::segment_path(&dir.join("consensus"), 50)).unwrap();
    File::create(segments::segment_path(&dir.join("consensus"), 51)).unwrap();
    let (mut s, recovered) = Storage::open(&dir).unwrap();
    assert_eq!(recovered.records.len(), 1);
    s.append(1, 1, b"again");
    s.flush().unwrap();
    drop(s);
    let (_, recovered) = Storage::open(&dir).unwrap();
    assert_eq!(recovered.records.len(), 2, "the next start reads both segments whole");
}

#[test]
fn a_torn_tail_followed_by_written_segments_refuses_to_start() {
    let dir = temp_dir("torn-then-data");
    let (mut s, _) = Storage::open(&dir).unwrap();
    s.append(0, 1, b"whole");
    s.append(1, 1, b"torn record");
    s.flush().unwrap();
    let torn = last_segment(&dir);
    drop(s);
    let (mut s, _) = Storage::open(&dir).unwrap();
    s.append(2, 1, b"later");
    s.flush().unwrap();
    drop(s);
    cut(&torn, 3);
    let error = Storage::open(&dir).err().unwrap();
    assert!(error.contains("refusing to start"), "{error}");
}

#[test]
fn a_bad_record_followed_by_a_valid_one_refuses_to_start() {
    let dir = temp_dir("bad-mid");
    let (mut s, _) = Storage::open(&dir).unwrap();
    s.append(0, 1, b"first");
    s.append(1, 1, b"second");
    s.append(2, 1, b"third");
    s.flush().unwrap();
    let seg = last_segment(&dir);
    drop(s);
    let mut data = fs::read(&seg).unwrap();
    let second = 8 + 9 + 5;
    data[second + 8 + 9 + 2] ^= 0xff;
    fs::write(&seg, data).unwrap();
    let error = Storage::open(&dir).err().unwrap();
    assert!(error.contains("damaged") && error.contains("refusing to start"), "{error}");
}

#[test]
fn segment_naming_survives_a_crash_right_after_rotate() {
    let dir = temp_dir("rotate-crash");
    let (mut s, _) = Storage::open(&dir).unwrap();
    s.append(0, 1, b"zero");
    s.append(1, 1, b"one");
    s.flush().unwrap();
    s.rotate().unwrap();
    drop(s); // a crash: the new segment is empty
    let (mut s, recovered) = Storage::open(&dir).unwrap();
    assert_eq!(recovered.records.len(), 2);
    s.append(2, 1, b"two");
    s.append(3, 1, b"three");
    s.flush().unwrap();
    drop(s);
    // New records went to the newest segment: a torn tail there is cut, not taken for corruption.
    let newest = last_segment(&dir);
    assert!(fs::metadata(&newest).unwrap().len() > 0, "records went to an older segment");
    cut(&newest, 2);
    let (_, recovered) = Storage::open(&dir).unwrap();
    let slots: Vec<u64> = recovered.records.iter().map(|r| r.slot).collect();
    assert_eq!(slots, vec![0, 1, 2]);
}

fn failing_sync(_: &File) -> std::io::Result<()> {
    Err(std::io::Error::from_raw_os_error(5))
}

#[test]
fn a_failed_fdatasync_is_an_error_for_the_caller() {
    let dir = temp_dir("sync-fails");
    let (mut s, _) = Storage::open_with(&dir, failing_sync).unwrap();
    s.append(0, 1, b"x");
    let mut result = Ok(());
    for _ in 0..100 {
        result = s.flush();
        if result.is_err() {
            break;
        }
        std::thread::sleep(SYNC_INTERVAL);
    }
    let error = result.expect_err("the disk thread's failed fdatasync reached the loop").to_string();
    assert!(error.contains("fdatasync") && error.contains("log-"), "{error}");
    assert!(s.rotate().is_err(), "a rotation syncs the segment it leaves, and fails too");
}

#[test]
fn the_failure_mark_survives_a_restart_until_cleared() {
    let dir = temp_dir("failure-mark");
    let (s, recovered) = Storage::open(&dir).unwrap();
    assert!(recovered.failed_stop.is_none());
    let mark = dir.join("consensus").join("failed");
    let size = fs::metadata(&mark).unwrap().len();
    recovery::write_failure_mark(&s.failed_mark, "cannot append to log-1: No space left on device").unwrap();
    assert_eq!(fs::metadata(&mark).unwrap().len(), size, "written in place");
    drop(s);
    let (mut s, recovered) = Storage::open(&dir).unwrap();
    assert!(recovered.failed_stop.unwrap().contains("No space left"));
    s.clear_failure_mark().unwrap();
    drop(s);
    let (_, recovered) = Storage::open(&dir).unwrap();
    assert!(recovered.failed_stop.is_none());
}
