//! Opening one slice library: read it, check it against its checksum (and signature when keys are
//! trusted), write the checked bytes to a private copy under a name used once, load that copy, check its
//! ABI version and descriptor, and keep its entry points.
//!
//! Invariants: the loader only ever maps bytes that passed [`integrity::check`]: the copy is created
//! from those bytes in memory, exclusively (`O_EXCL | O_NOFOLLOW`, mode 0600), relative to an open
//! handle on the copy folder, which [`WorkDir::open`] checked to be a real folder owned by this user and
//! writable by nobody else. Error texts name no absolute path. The ABI version at offset 0 of the descriptor is read and checked before any other
//! field; every string and array of the descriptor is bounds- and UTF-8-checked and copied into
//! [`SliceInfo`], so nothing borrowed from the library outlives the checks except the entry points
//! in [`EntryPoints`], which are valid exactly as long as the [`Library`] is loaded. The unique copy
//! is deleted as soon as the loader has mapped it (the mapping keeps it alive; no fd stays open).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};

use aether_sdk::abi::{self, Array, SliceDescriptor, StrRef};

use crate::error::ContainerError;
use crate::integrity::{self, TrustedKeys};
use vocab::{Artifact, Delivery, MissedRuns, Timing};

/// Most methods, routes, subscriptions or schedules one descriptor may list, and longest string in it.
const DESCRIPTOR_ITEMS_MAX: usize = 1024;
const DESCRIPTOR_STR_BYTES_MAX: usize = 4096;

/// A route a slice declares: `http_method path -> method`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    pub http_method: String,
    pub path: String,
    pub method: String,
}

/// A topic a slice subscribes to: `topic -> method`, delivered as `delivery` says (the blueprint may
/// override it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub topic: String,
    pub method: String,
    pub delivery: Delivery,
}

/// A task a slice declares: `method` runs as `name` when `timing` says; missed runs follow `missed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleInfo {
    pub name: String,
    pub method: String,
    pub timing: Timing,
    pub missed: MissedRuns,
}

/// What a slice said about itself, checked and copied out of its descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    pub name: String,
    pub version: String,
    pub methods: Vec<String>,
    pub routes: Vec<RouteInfo>,
    pub subscriptions: Vec<SubscriptionInfo>,
    pub schedules: Vec<ScheduleInfo>,
    /// Declared single-active (`Slice::SINGLE_ACTIVE`).
    pub single_active: bool,
}

/// The slice's entry points (valid while the library is loaded).
#[derive(Clone, Copy)]
pub(crate) struct EntryPoints {
    pub start: abi::StartFn,
    pub stop: abi::StopFn,
    pub call: abi::CallFn,
    pub free: abi::FreeFn,
    /// `None`: the slice accepts every new config.
    pub reconfigure: Option<abi::ReconfigureFn>,
}

/// A loaded, checked slice library.
pub(crate) struct Library {
    pub info: SliceInfo,
    pub entry: EntryPoints,
    library: libloading::Library,
}

impl Library {
    /// Close the library (runs its destructors and unmaps it).
    pub fn close(self) -> Result<(), String> {
        self.library.close().map_err(|e| e.to_string())
    }

    /// Keep the library mapped forever: code in it may still be running.
    pub fn leak(self) {
        std::mem::forget(self.library);
    }
}

static COPY_SEQ: AtomicU64 = AtomicU64::new(0);

/// Largest library file read for loading (uploads are far smaller; a hand-copied file may be larger).
const LIBRARY_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// Names tried when a copy name is already taken (a leftover of an earlier process with the same id).
const COPY_NAME_TRIES: usize = 16;

/// The folder private copies are made in: owned by this process's user, writable by nobody else, and
/// held open, so copies are created relative to the folder that was checked.
pub(crate) struct WorkDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl WorkDir {
    /// Creates `path` (mode 0700) if missing, then opens and checks it: a real folder (not a symlink),
    /// owned by this user, not writable by group or others.
    pub fn open(path: &Path) -> Result<WorkDir, String> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create its parent folder: {e}"))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create it: {e}")),
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| {
            if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
                "it is a symlink or not a folder; it must be a real folder only this user can write".to_string()
            } else {
                format!("cannot open it: {e}")
            }
        })?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| format!("cannot inspect it: {e}"))?;
        let user = rustix::process::geteuid().as_raw();
        if stat.st_uid != user {
            return Err(format!(
                "it is owned by user {}, not by this user ({user}); remove it or chown it",
                stat.st_uid
            ));
        }
        let mode = stat.st_mode & 0o777;
        if mode & 0o022 != 0 {
            return Err(format!("it is writable by group or others (mode {mode:o}); run `chmod 700` on it"));
        }
        Ok(WorkDir { path: path.to_path_buf(), fd })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a new file `name` (exclusive, never following a symlink, mode 0600) holding `bytes`.
    fn create(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600))?;
        let mut file = std::fs::File::from(fd);
        let written = file.write_all(bytes).and_then(|()| file.flush());
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&self.fd, name, AtFlags::empty());
            return Err(e);
        }
        Ok(())
    }

    fn remove(&self, name: &str) {
        let _ = rustix::fs::unlinkat(&self.fd, name, AtFlags::empty());
    }
}

/// Reads `source`, checks it against its checksum (and signature, when keys are trusted), writes the
/// checked bytes to a private copy under a name used once, loads that copy, checks its descriptor, and
/// deletes the copy.
pub(crate) fn open(
    artifact: &Artifact,
    source: &Path,
    work_dir: &WorkDir,
    keys: &TrustedKeys,
) -> Result<Library, ContainerError> {
    let io = |action: &'static str| move |error| ContainerError::Io { artifact: artifact.clone(), action, error };
    let bytes = read_bounded(source).map_err(io("read the library"))?;
    integrity::check(source, &bytes, keys)
        .map_err(|error| ContainerError::Integrity { artifact: artifact.clone(), error: Box::new(error) })?;
    let name = private_copy(artifact, work_dir, &bytes).map_err(io("make a private copy of the library"))?;
    let copy = work_dir.path().join(&name);
    let opened = load(&copy);
    // The loader has mapped the file (or failed); the name is no longer needed either way.
    work_dir.remove(&name);
    let library = opened.map_err(|reason| ContainerError::NotALibrary {
        artifact: artifact.clone(),
        reason: without_paths(&reason, &copy, work_dir.path(), &name),
    })?;
    let (info, entry) = read_descriptor(&library, artifact)?;
    Ok(Library { info, entry, library })
}

fn read_bounded(source: &Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(source)?;
    let len = file.metadata()?.len();
    if len > LIBRARY_BYTES_MAX {
        return Err(std::io::Error::other(format!(
            "the file has {len} bytes, over the {LIBRARY_BYTES_MAX}-byte limit"
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(LIBRARY_BYTES_MAX + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > LIBRARY_BYTES_MAX {
        return Err(std::io::Error::other(format!("the file grew over the {LIBRARY_BYTES_MAX}-byte limit")));
    }
    Ok(bytes)
}

/// Writes `bytes` to a new file in `work_dir`; answers its name.
fn private_copy(artifact: &Artifact, work_dir: &WorkDir, bytes: &[u8]) -> std::io::Result<String> {
    let mut last = None;
    for _ in 0..COPY_NAME_TRIES {
        let seq = COPY_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{}-{}-{seq}.so", artifact.id(), artifact.version(), std::process::id());
        match work_dir.create(&name, bytes) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free copy name")))
}

/// The loader's message with this node's paths replaced by the copy's file name.
fn without_paths(reason: &str, copy: &Path, work_dir: &Path, name: &str) -> String {
    reason.replace(&copy.display().to_string(), name).replace(&work_dir.display().to_string(), ".")
}

fn load(path: &Path) -> Result<libloading::Library, String> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading runs the library's initialisers. Slice libraries are built with the SDK, whose
    // libraries have no initialisers of their own; RTLD_LOCAL keeps their symbols out of the global
    // namespace, so two copies (two versions) never bind to each other, and RTLD_NOW reports missing
    // symbols here rather than at the first call.
    let library = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) };
    library.map(libloading::Library::from).map_err(|e| e.to_string())
}

fn read_descriptor(
    library: &libloading::Library,
    artifact: &Artifact,
) -> Result<(SliceInfo, EntryPoints), ContainerError> {
    let bad = |reason: String| ContainerError::BadDescriptor { artifact: artifact.clone(), reason };
    // SAFETY: the symbol is declared by the ABI as `extern "C" fn() -> *const SliceDescriptor`; a
    // library exporting the name with another type is not a slice library, which the ABI check
    // below is there to catch as far as it can.
    let symbol = unsafe { library.get::<abi::DescriptorFn>(abi::DESCRIPTOR_SYMBOL_NUL) };
    let describe = symbol
        .map_err(|_| ContainerError::MissingSymbol { artifact: artifact.clone(), symbol: abi::DESCRIPTOR_SYMBOL })?;
    // SAFETY: calling the descriptor function has no preconditions (ABI contract).
    let descriptor = unsafe { describe() };
    if descriptor.is_null() || !descriptor.is_aligned() {
        return Err(bad(format!("the descriptor function returned a bad pointer {descriptor:p}")));
    }
    // SAFETY: every ABI version starts the descriptor with a u32 version, so this read is valid
    // whatever version the library was built for; nothing else is read before it is checked.
    let found = unsafe { descriptor.cast::<u32>().read() };
    if found != abi::ABI_VERSION {
        return Err(ContainerError::AbiMismatch { artifact: artifact.clone(), expected: abi::ABI_VERSION, found });
    }
    // SAFETY: same ABI version, so the pointer is to a `SliceDescriptor` of this layout, which the
    // library keeps alive while loaded.
    let descriptor = unsafe { &*descriptor };
    let info = slice_info(descriptor).map_err(bad)?;
    check_identity(&info, artifact).map_err(bad)?;
    check_routes(&info).map_err(bad)?;
    let entry = entry_points(descriptor).map_err(bad)?;
    Ok((info, entry))
}

fn slice_info(d: &SliceDescriptor) -> Result<SliceInfo, String> {
    if d.descriptor_size as usize != std::mem::size_of::<SliceDescriptor>() {
        return Err(format!(
            "descriptor size {} differs from {} for the same ABI version",
            d.descriptor_size,
            std::mem::size_of::<SliceDescriptor>()
        ));
    }
    let methods = array(d.methods, "methods")?.iter().map(|m| text(*m, "method")).collect::<Result<_, _>>()?;
    let routes = array(d.routes, "routes")?
        .iter()
        .map(|r| {
            Ok(RouteInfo {
                http_method: text(r.http_method, "route method")?,
                path: text(r.path, "route path")?,
                method: text(r.method, "route target")?,
            })
        })
        .collect::<Result<_, String>>()?;
    let subscriptions = array(d.subscriptions, "subscriptions")?
        .iter()
        .map(|s| {
            let topic = text(s.topic, "topic")?;
            let delivery = Delivery::from_code(s.delivery)
                .ok_or_else(|| format!("subscription to `{topic}`: unknown delivery code {}", s.delivery))?;
            Ok(SubscriptionInfo { topic, method: text(s.method, "topic method")?, delivery })
        })
        .collect::<Result<_, String>>()?;
    let schedules = array(d.schedules, "schedules")?
        .iter()
        .map(|s| {
            let name = text(s.name, "schedule name")?;
            let cron = text(s.cron, "schedule cron expression")?;
            let timing = if cron.is_empty() {
                if s.interval_ms == 0 {
                    return Err(format!("schedule `{name}`: an interval of 0 ms"));
                }
                Timing::Interval { ms: s.interval_ms }
            } else {
                let zone = text(s.time_zone, "schedule time zone")?;
                Timing::Cron { expression: cron, time_zone: if zone.is_empty() { "UTC".to_owned() } else { zone } }
            };
            let missed = MissedRuns::from_code(s.missed, s.missed_limit).ok_or_else(|| {
                format!("schedule `{name}`: unknown missed-run policy {} (limit {})", s.missed, s.missed_limit)
            })?;
            Ok(ScheduleInfo { name, method: text(s.method, "schedule method")?, timing, missed })
        })
        .collect::<Result<_, String>>()?;
    Ok(SliceInfo {
        name: text(d.name, "name")?,
        version: text(d.version, "version")?,
        methods,
        routes,
        subscriptions,
        schedules,
        single_active: d.flags & abi::slice_flags::SINGLE_ACTIVE != 0,
    })
}

fn check_identity(info: &SliceInfo, artifact: &Artifact) -> Result<(), String> {
    if info.name != artifact.id() || info.version != artifact.version().to_string() {
        return Err(format!(
            "the library says it is {} {}, the coordinates say {} {}",
            info.name,
            info.version,
            artifact.id(),
            artifact.version()
        ));
    }
    Ok(())
}

fn check_routes(info: &SliceInfo) -> Result<(), String> {
    let mut table = invoke::routes::RouteTable::new();
    for route in &info.routes {
        if !info.methods.contains(&route.method) {
            return Err(format!("route {} {} names unknown method `{}`", route.http_method, route.path, route.method));
        }
        table.insert(&route.http_method, &route.path, ()).map_err(|e| e.to_string())?;
    }
    let targets = info.subscriptions.iter().map(|s| &s.method).chain(info.schedules.iter().map(|s| &s.method));
    for method in targets {
        if !info.methods.contains(method) {
            return Err(format!("a subscription or schedule names unknown method `{method}`"));
        }
    }
    Ok(())
}

fn entry_points(d: &SliceDescriptor) -> Result<EntryPoints, String> {
    match (d.start, d.stop, d.call, d.free) {
        (Some(start), Some(stop), Some(call), Some(free)) => {
            Ok(EntryPoints { start, stop, call, free, reconfigure: d.reconfigure })
        }
        _ => Err("an entry point (start, stop, call, free) is null".into()),
    }
}

fn array<'a, T>(items: Array<T>, what: &str) -> Result<&'a [T], String> {
    if items.len == 0 {
        return Ok(&[]);
    }
    if items.len > DESCRIPTOR_ITEMS_MAX || items.ptr.is_null() || !items.ptr.is_aligned() {
        return Err(format!("{what}: bad array ({} items at {:p})", items.len, items.ptr));
    }
    // SAFETY: non-null, aligned, bounded length; the library keeps descriptor arrays alive while it
    // is loaded, and they are only read here, during loading.
    Ok(unsafe { std::slice::from_raw_parts(items.ptr, items.len) })
}

fn text(value: StrRef, what: &str) -> Result<String, String> {
    if value.len == 0 {
        return Ok(String::new());
    }
    if value.len > DESCRIPTOR_STR_BYTES_MAX || value.ptr.is_null() {
        return Err(format!("{what}: bad string ({} bytes at {:p})", value.len, value.ptr));
    }
    // SAFETY: non-null with a bounded length; descriptor strings live as long as the library.
    let bytes = unsafe { std::slice::from_raw_parts(value.ptr, value.len) };
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aether-workdir-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_copy_folder_is_created_private() {
        let dir = scratch("create").join("data").join("loaded");
        let work = WorkDir::open(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Opening it again (a restart) is fine.
        drop(work);
        WorkDir::open(&dir).unwrap();
    }

    #[test]
    fn a_symlink_or_shared_copy_folder_is_refused() {
        let base = scratch("refuse");
        let real = base.join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = base.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = WorkDir::open(&link).err().expect("a symlink is refused");
        assert!(err.contains("symlink"), "{err}");

        let shared = base.join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = WorkDir::open(&shared).err().expect("a world-writable folder is refused");
        assert!(err.contains("chmod 700"), "{err}");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(WorkDir::open(&shared).is_err(), "group-writable is refused too");

        let file = base.join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(WorkDir::open(&file).is_err(), "a file is not a folder");
    }

    #[test]
    fn copies_are_created_exclusively_without_following_symlinks() {
        let base = scratch("exclusive");
        let work = WorkDir::open(&base.join("loaded")).unwrap();
        work.create("a.so", b"first").unwrap();
        assert_eq!(std::fs::read(base.join("loaded/a.so")).unwrap(), b"first");
        let mode = std::fs::metadata(base.join("loaded/a.so")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = work.create("a.so", b"second").unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(base.join("loaded/a.so")).unwrap(), b"first", "an existing copy is never rewritten");

        let target = base.join("victim");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, base.join("loaded/b.so")).unwrap();
        assert!(work.create("b.so", b"evil").is_err(), "a planted symlink is not followed");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");

        work.remove("a.so");
        assert!(!base.join("loaded/a.so").exists());
    }

    #[test]
    fn a_taken_copy_name_moves_on_to_the_next() {
        let base = scratch("taken");
        let work = WorkDir::open(&base.join("loaded")).unwrap();
        let artifact = Artifact::parse("org.example:thing:1.0.0").unwrap();
        let first = private_copy(&artifact, &work, b"one").unwrap();
        let second = private_copy(&artifact, &work, b"two").unwrap();
        assert_ne!(first, second);
        assert_eq!(std::fs::read(base.join("loaded").join(&second)).unwrap(), b"two");
    }

    #[test]
    fn loader_messages_lose_this_nodes_paths() {
        let copy = Path::new("/srv/aether/data/loaded/x-1-2-3.so");
        let reason = "/srv/aether/data/loaded/x-1-2-3.so: invalid ELF header";
        let clean = without_paths(reason, copy, Path::new("/srv/aether/data/loaded"), "x-1-2-3.so");
        assert_eq!(clean, "x-1-2-3.so: invalid ELF header");
    }
}
