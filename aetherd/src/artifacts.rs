//! This node's repository folder, the cache the container loads slice libraries from (Maven layout,
//! `{artifact}-{version}.so` with `.so.sha256` and, when signed, `.so.sig` beside it), and the check of an
//! uploaded library before the repository takes it.
//!
//! The repository's truth is the catalog and the storage plane (`mgmt::repository`, `crate::blobs`); this
//! folder holds what was uploaded here or fetched (`deploy::Provisioner`), plus any library an operator put
//! there by hand (a seed). A stored library has its checksum file (and signature file) beside it, written
//! first, each to a temporary name, synced and renamed; the library itself is renamed into the Maven layout
//! last, so a loader never sees half a library, and one that sees a library with another upload's checksum
//! refuses it.
//!
//! An upload is checked by loading it, as a deployment would, in a container of its own over a staging
//! folder (`{data_dir}/upload-check`), in a process of its own (`aetherd --check-library`): the descriptor
//! must load (ABI version) and name the coordinates (`info.name` = the artifact id, `info.version` = the
//! version, as `container` checks at every load). Loading runs no slice code but the library's initialisers
//! (SDK libraries have none); a library whose initialisers exit, crash or hang is refused, and only the
//! check process pays for them. Only an operator may upload.
//!
//! Invariants: nothing is stored whose bytes do not hash to the digest it came with; reads are bounded by
//! the size the catalog records; one upload check runs at a time (uploads are rare, and they share the
//! staging folder).

use container::integrity::{self, Digest};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A whole artifact with its integrity data, as uploaded (borrowed: an upload's bytes are not copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact<'a> {
    /// `group:artifact:version`.
    pub coords: String,
    pub bytes: &'a [u8],
    pub sha256: Digest,
    pub signature: Option<[u8; 64]>,
}

/// Where `artifact` lives in a Maven-layout repository.
pub fn repository_file(repo: &Path, artifact: &str) -> Result<PathBuf, String> {
    let coords = container::Artifact::parse(artifact).map_err(|e| e.to_string())?;
    Ok(repo.join(coords.repository_path()))
}

/// Writes an artifact into the repository: its checksum file, its signature file (or none: a stale one
/// is removed), then the library, each to a temporary name, synced, and renamed into place. Answers the
/// library's path. Refuses bytes that do not hash to `sha256`.
pub fn store(repo: &Path, artifact: &Artifact<'_>) -> Result<PathBuf, String> {
    if integrity::sha256(artifact.bytes) != artifact.sha256 {
        return Err(format!("{}: the bytes do not match their SHA-256", artifact.coords));
    }
    let path = repository_file(repo, &artifact.coords)?;
    let dir = path.parent().ok_or_else(|| format!("{} has no folder", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    integrity::write_checksum(&path, &artifact.sha256)
        .map_err(|e| format!("{}: {e}", integrity::checksum_file(&path).display()))?;
    let signature_file = integrity::signature_file(&path);
    match &artifact.signature {
        Some(signature) => integrity::write_signature(&path, signature),
        None => match std::fs::remove_file(&signature_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
    .map_err(|e| format!("{}: {e}", signature_file.display()))?;
    integrity::write_atomically(&path, artifact.bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(path)
}

/// The marker beside a library that came from the catalog (uploaded here or fetched), as opposed to a seed
/// an operator put in the folder: `{library}.catalog`. A marked copy whose catalog record is gone was deleted
/// from the repository, and is removed rather than loaded.
pub fn catalog_marker(library: &Path) -> PathBuf {
    let mut name = library.as_os_str().to_owned();
    name.push(".catalog");
    PathBuf::from(name)
}

/// Marks `library` as a copy of the catalog's version.
pub fn mark_from_catalog(library: &Path) -> Result<(), String> {
    std::fs::write(catalog_marker(library), b"").map_err(|e| format!("cannot mark the copy as the catalog's: {e}"))
}

/// Removes a version's library and sidecars from the folder; absent files are not an error.
pub fn remove(repo: &Path, artifact: &kvstore::Artifact) -> Result<(), String> {
    let path = repo.join(artifact.repository_path());
    for file in [catalog_marker(&path), integrity::signature_file(&path), integrity::checksum_file(&path), path.clone()]
    {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot remove {}: {e}", artifact.repository_path().display()))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The cached library's bytes when the folder holds exactly `size` bytes hashing to `sha256_hex`.
pub fn read_cached(repo: &Path, artifact: &kvstore::Artifact, size: u64, sha256_hex: &str) -> Option<Vec<u8>> {
    let file = std::fs::File::open(repo.join(artifact.repository_path())).ok()?;
    if file.metadata().ok()?.len() != size {
        return None;
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).ok()?);
    file.take(size + 1).read_to_end(&mut bytes).ok()?;
    let matches = bytes.len() as u64 == size && integrity::to_hex(&integrity::sha256(&bytes)) == sha256_hex;
    matches.then_some(bytes)
}

/// The first argument that makes `aetherd` a library check process ([`check_process`]), not a node.
pub const CHECK_FLAG: &str = "--check-library";
/// The environment variable that names the node's process id to its check process.
const CHECK_PARENT_ENV: &str = "AETHER_CHECK_PARENT";
/// How long loading one upload may take before its check process is killed.
pub const CHECK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// Most uploads checked or waiting for their check at once on one node; more are refused at once (503), so
/// uploads whose checks hang cannot hold every management worker.
pub const CHECKS_QUEUED_MAX: usize = 4;
/// Most bytes of the check process's reason kept for the uploader.
const CHECK_REASON_BYTES_MAX: u64 = 4096;

/// Loads uploaded libraries, each in a process of its own, to check them before the repository takes them.
pub struct LibraryCheck {
    /// `{data_dir}/upload-check`: the staging repository and the check process's work folder and output.
    root: PathBuf,
    staging: PathBuf,
    node_id: String,
    /// The program run as the check process (this `aetherd`).
    program: PathBuf,
    deadline: std::time::Duration,
    one_at_a_time: parking_lot::Mutex<()>,
    /// Checks running or waiting for `one_at_a_time`.
    queued: std::sync::atomic::AtomicUsize,
}

impl LibraryCheck {
    /// The checker over `{data_dir}/upload-check` (emptied now: what is there was left by a stopped check),
    /// running `program` (`aetherd` itself) as its check process.
    pub fn new(data_dir: &Path, node_id: &str, program: PathBuf) -> Result<LibraryCheck, String> {
        let root = data_dir.join("upload-check");
        let staging = root.join("repository");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
        // The container the check process builds, built once here so a folder it refuses stops the node now.
        check_container(&root, node_id).map_err(|e| e.to_string())?;
        Ok(LibraryCheck {
            root,
            staging,
            node_id: node_id.to_owned(),
            program,
            deadline: CHECK_DEADLINE,
            one_at_a_time: parking_lot::Mutex::new(()),
            queued: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Stages the library as `artifact`, loads and unloads it in a check process, and answers `Err` saying
    /// why it is no slice library of these coordinates, in words for the uploader. Loading runs the
    /// library's initialisers: one that exits, crashes or hangs ends (or, past [`CHECK_DEADLINE`], has
    /// killed) the check process, never this node.
    pub fn check(&self, artifact: &kvstore::Artifact, bytes: &[u8], sha256: &Digest) -> Result<(), CheckError> {
        let _queued = Queued::enter(&self.queued).ok_or_else(|| {
            CheckError::Node(format!(
                "{CHECKS_QUEUED_MAX} uploads are being checked on this node already; send it again in a moment"
            ))
        })?;
        let _one = self.one_at_a_time.lock();
        let staged = Artifact { coords: artifact.to_string(), bytes, sha256: *sha256, signature: None };
        store(&self.staging, &staged)
            .map_err(|e| CheckError::Node(format!("cannot stage the library for its check: {e}")))?;
        let outcome = self.run(artifact);
        if let Err(e) = remove(&self.staging, artifact) {
            log::warn!("{artifact}: cleaning the upload check's folder: {e}");
        }
        outcome
    }

    fn run(&self, artifact: &kvstore::Artifact) -> Result<(), CheckError> {
        let node = |what: &str, e: std::io::Error| CheckError::Node(format!("{what} the library's check: {e}"));
        let said = self.root.join("check-output");
        let output = std::fs::File::create(&said).map_err(|e| node("cannot start", e))?;
        let mut child = std::process::Command::new(&self.program)
            .args([CHECK_FLAG, &self.root.display().to_string(), &self.node_id, &artifact.to_string()])
            .env(CHECK_PARENT_ENV, std::process::id().to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(output)
            .spawn()
            .map_err(|e| node("cannot start", e))?;
        let started = std::time::Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() >= self.deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(CheckError::Refused(format!(
                        "loading the library did not finish within {} s (its load-time code hangs?)",
                        self.deadline.as_secs()
                    )));
                }
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(10)),
                Err(e) => return Err(node("waiting for", e)),
            }
        };
        let mut reason = String::new();
        if let Ok(file) = std::fs::File::open(&said) {
            let _ = file.take(CHECK_REASON_BYTES_MAX).read_to_string(&mut reason);
        }
        let reason = reason.trim();
        match status.code() {
            Some(0) => Ok(()),
            Some(CHECK_REFUSED) if !reason.is_empty() => Err(CheckError::Refused(reason.to_owned())),
            _ => Err(CheckError::Refused(format!(
                "loading the library ended its check process ({status}): its load-time code exits or crashes"
            ))),
        }
    }
}

/// A place among the [`CHECKS_QUEUED_MAX`] checks running or waiting, given back when dropped.
struct Queued<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Queued<'a> {
    fn enter(count: &'a std::sync::atomic::AtomicUsize) -> Option<Queued<'a>> {
        use std::sync::atomic::Ordering::SeqCst;
        count.fetch_update(SeqCst, SeqCst, |n| (n < CHECKS_QUEUED_MAX).then_some(n + 1)).ok()?;
        Some(Queued(count))
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Why an upload check did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The library is no slice library of these coordinates (or its load-time code misbehaves): the uploader's.
    Refused(String),
    /// This node could not run the check (its disk, its process table): nothing is said about the library.
    Node(String),
}

/// The check process's exit code when the library is refused (the reason is on its stderr).
const CHECK_REFUSED: i32 = 3;

fn check_container(root: &Path, node_id: &str) -> Result<container::Container, container::ContainerError> {
    let mut config = container::ContainerConfig::new(root.join("repository"), node_id);
    config.work_dir = root.join("loaded");
    config.pool.workers = 1;
    container::Container::new(config)
}

/// `aetherd --check-library ROOT NODE G:A:V`: loads the library staged in `ROOT/repository` and unloads it;
/// exits 0 when it is a slice library of these coordinates, else [`CHECK_REFUSED`] with the reason on stderr.
pub fn check_process(args: &[String]) -> std::process::ExitCode {
    let refuse = |reason: String| {
        eprintln!("{reason}");
        std::process::ExitCode::from(CHECK_REFUSED as u8)
    };
    // The check dies with the node that asked for it: a node that stops or crashes leaves no check behind,
    // however long the library's load-time code would hang.
    if rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)).is_err() {
        return refuse("cannot tie the check to its node's life".into());
    }
    let parent = std::env::var(CHECK_PARENT_ENV).ok().and_then(|pid| pid.parse::<i32>().ok());
    let ppid = rustix::process::getppid().map(|pid| pid.as_raw_nonzero().get());
    if parent.is_some_and(|parent| Some(parent) != ppid) {
        return refuse("the node that asked for this check is gone".into());
    }
    let [root, node_id, coords] = args else {
        return refuse(format!("usage: aetherd {CHECK_FLAG} ROOT NODE GROUP:ARTIFACT:VERSION"));
    };
    let artifact = match kvstore::Artifact::parse(coords) {
        Ok(artifact) => artifact,
        Err(e) => return refuse(format!("{coords}: {e}")),
    };
    let container = match check_container(Path::new(root), node_id) {
        Ok(container) => container,
        Err(e) => return refuse(format!("cannot set up the check: {e}")),
    };
    match container.load(&artifact, Vec::new()) {
        Ok(id) => {
            let _ = container.unload(id);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => refuse(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(coords: &str, bytes: &'static [u8], signature: Option<[u8; 64]>) -> Artifact<'static> {
        Artifact { coords: coords.into(), sha256: integrity::sha256(bytes), bytes, signature }
    }

    /// A check whose process is the shell script `script` (given the check's arguments), with `deadline`.
    fn checker(name: &str, script: &str, deadline: std::time::Duration) -> (LibraryCheck, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("aether-check-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let program = dir.join("check.sh");
        std::fs::write(&program, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut check = LibraryCheck::new(&dir, "node-1", program).unwrap();
        check.deadline = deadline;
        (check, dir)
    }

    fn check_with(name: &str, script: &str, deadline: std::time::Duration) -> Result<(), CheckError> {
        let (check, dir) = checker(name, script, deadline);
        let coords = kvstore::Artifact::parse("org.example:thing:1.0.0").unwrap();
        let outcome = check.check(&coords, b"\x7fELF bytes", &integrity::sha256(b"\x7fELF bytes"));
        assert!(!repository_file(&check.staging, "org.example:thing:1.0.0").unwrap().exists(), "staging emptied");
        let _ = std::fs::remove_dir_all(&dir);
        outcome
    }

    /// The check runs in a process of its own: what the library's load does to that process (exit, crash,
    /// hang) is a refusal naming it, never the node's end; a refusal's reason comes from its stderr.
    #[test]
    fn the_check_process_decides_and_its_end_or_hang_is_a_refusal() {
        let long = std::time::Duration::from_secs(20);
        let args = r#"[ "$1" = --check-library ] && [ "$3" = node-1 ] && [ "$4" = org.example:thing:1.0.0 ] && [ -f "$2/repository/org/example/thing/1.0.0/thing-1.0.0.so" ]"#;
        assert_eq!(check_with("ok", &format!("{args} && exit 0; exit 9"), long), Ok(()));
        let refused = check_with("refused", "echo 'no aether_slice_descriptor' >&2; exit 3", long);
        assert_eq!(refused, Err(CheckError::Refused("no aether_slice_descriptor".to_owned())));
        let refused = |outcome: Result<(), CheckError>| match outcome {
            Err(CheckError::Refused(reason)) => reason,
            other => panic!("not a refusal: {other:?}"),
        };
        let exited = refused(check_with("exits", "exit 42", long));
        assert!(exited.contains("exits or crashes") && exited.contains("42"), "{exited}");
        let killed = refused(check_with("crashes", "kill -SEGV $$", long));
        assert!(killed.contains("exits or crashes"), "{killed}");
        let started = std::time::Instant::now();
        let hung = refused(check_with("hangs", "exec sleep 30", std::time::Duration::from_millis(300)));
        assert!(hung.contains("did not finish"), "{hung}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the hung check was not killed");
    }

    /// Checks that hang hold at most [`CHECKS_QUEUED_MAX`] management workers: one more is refused at once.
    #[test]
    fn checks_beyond_the_queue_are_refused_at_once() {
        let (check, dir) = checker("queue", "exec sleep 30", std::time::Duration::from_secs(3));
        let check = std::sync::Arc::new(check);
        let waiting: Vec<_> = (0..CHECKS_QUEUED_MAX)
            .map(|i| {
                let check = std::sync::Arc::clone(&check);
                std::thread::spawn(move || {
                    let coords = kvstore::Artifact::parse(&format!("org.example:hang{i}:1.0.0")).unwrap();
                    check.check(&coords, b"\x7fELF", &integrity::sha256(b"\x7fELF"))
                })
            })
            .collect();
        let full = wait_until(|| check.queued.load(std::sync::atomic::Ordering::SeqCst) == CHECKS_QUEUED_MAX);
        assert!(full, "the checks never queued");
        let coords = kvstore::Artifact::parse("org.example:one-more:1.0.0").unwrap();
        let started = std::time::Instant::now();
        let outcome = check.check(&coords, b"\x7fELF", &integrity::sha256(b"\x7fELF"));
        assert!(matches!(&outcome, Err(CheckError::Node(why)) if why.contains("already")), "{outcome:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "the refusal waited");
        // The first waiting check ends at its deadline; then there is room again.
        drop(waiting.into_iter().next().map(|t| t.join()));
        assert!(check.queued.load(std::sync::atomic::Ordering::SeqCst) < CHECKS_QUEUED_MAX);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn wait_until(mut done: impl FnMut() -> bool) -> bool {
        (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            done()
        })
    }

    /// A check this node cannot run says nothing about the library: it is the node's failure, not a refusal.
    #[test]
    fn a_check_the_node_cannot_run_is_the_nodes_failure() {
        let (mut check, dir) = checker("missing", "exit 0", std::time::Duration::from_secs(20));
        check.program = dir.join("no-such-program");
        let coords = kvstore::Artifact::parse("org.example:thing:1.0.0").unwrap();
        let outcome = check.check(&coords, b"\x7fELF", &integrity::sha256(b"\x7fELF"));
        assert!(matches!(&outcome, Err(CheckError::Node(why)) if why.contains("cannot start")), "{outcome:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn store_writes_the_maven_layout_with_checksum_and_signature_files() {
        let repo = std::env::temp_dir().join(format!("aether-artifacts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&repo);
        let signed = artifact("org.example:thing:1.2.3", b"bytes", Some([3; 64]));
        let path = store(&repo, &signed).unwrap();
        assert!(path.ends_with("org/example/thing/1.2.3/thing-1.2.3.so"));
        assert_eq!(std::fs::read(&path).unwrap(), b"bytes");
        let keys = integrity::TrustedKeys::default();
        assert_eq!(integrity::check(&path, b"bytes", &keys).unwrap(), signed.sha256);
        assert_eq!(std::fs::read_to_string(integrity::signature_file(&path)).unwrap().trim(), "03".repeat(64));

        // A new upload of the same version without a signature leaves no stale signature behind.
        let unsigned = artifact("org.example:thing:1.2.3", b"other", None);
        store(&repo, &unsigned).unwrap();
        assert!(!integrity::signature_file(&path).exists());
        assert_eq!(integrity::check(&path, b"other", &keys).unwrap(), unsigned.sha256);

        let mut lying = artifact("org.example:thing:1.2.4", b"bytes", None);
        lying.sha256[0] ^= 1;
        assert!(store(&repo, &lying).is_err());
        assert!(!repository_file(&repo, "org.example:thing:1.2.4").unwrap().exists(), "nothing stored");
        assert!(store(&repo, &artifact("not coordinates", b"x", None)).is_err());

        // The cache answers only bytes of the recorded size and digest, and a removal takes the sidecars too.
        let coords = kvstore::Artifact::parse("org.example:thing:1.2.3").unwrap();
        let hex = integrity::to_hex(&unsigned.sha256);
        assert_eq!(read_cached(&repo, &coords, 5, &hex), Some(b"other".to_vec()));
        assert_eq!(read_cached(&repo, &coords, 6, &hex), None);
        assert_eq!(read_cached(&repo, &coords, 5, &integrity::to_hex(&signed.sha256)), None);
        remove(&repo, &coords).unwrap();
        assert!(!path.exists() && !integrity::checksum_file(&path).exists());
        remove(&repo, &coords).unwrap();
        let _ = std::fs::remove_dir_all(&repo);
    }
}
