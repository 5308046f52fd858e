//! Opening one slice library: copy it to a unique path, load it, check its ABI version and
//! descriptor, and keep its entry points.
//!
//! Invariants: the ABI version at offset 0 of the descriptor is read and checked before any other
//! field; every string and array of the descriptor is bounds- and UTF-8-checked and copied into
//! [`SliceInfo`], so nothing borrowed from the library outlives the checks except the entry points
//! in [`EntryPoints`], which are valid exactly as long as the [`Library`] is loaded. The unique copy
//! is deleted as soon as the loader has mapped it (the mapping keeps it alive; no fd stays open).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sdk::abi::{self, Array, SliceDescriptor, StrRef};

use crate::error::ContainerError;
use vocab::Artifact;

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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub topic: String,
    pub method: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleInfo {
    pub name: String,
    pub interval_ms: u64,
    pub method: String,
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
}

/// The slice's entry points (valid while the library is loaded).
#[derive(Clone, Copy)]
pub(crate) struct EntryPoints {
    pub start: abi::StartFn,
    pub stop: abi::StopFn,
    pub call: abi::CallFn,
    pub free: abi::FreeFn,
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

/// Copy `source` into `work_dir` under a name used once, load it, check it, delete the copy.
pub(crate) fn open(artifact: &Artifact, source: &Path, work_dir: &Path) -> Result<Library, ContainerError> {
    let copy = unique_copy_path(artifact, work_dir);
    std::fs::copy(source, &copy).map_err(|error| ContainerError::Io {
        artifact: artifact.clone(),
        path: source.to_path_buf(),
        action: "copy",
        error,
    })?;
    let opened = load(&copy);
    // The loader has mapped the file (or failed); the name is no longer needed either way.
    let _ = std::fs::remove_file(&copy);
    let library = opened.map_err(|reason| ContainerError::NotALibrary {
        artifact: artifact.clone(),
        path: source.to_path_buf(),
        reason,
    })?;
    let (info, entry) = read_descriptor(&library, artifact, source)?;
    Ok(Library { info, entry, library })
}

fn unique_copy_path(artifact: &Artifact, work_dir: &Path) -> PathBuf {
    let seq = COPY_SEQ.fetch_add(1, Ordering::Relaxed);
    work_dir.join(format!("{}-{}-{}-{seq}.so", artifact.id(), artifact.version(), std::process::id()))
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
    path: &Path,
) -> Result<(SliceInfo, EntryPoints), ContainerError> {
    let bad =
        |reason: String| ContainerError::BadDescriptor { artifact: artifact.clone(), path: path.to_path_buf(), reason };
    // SAFETY: the symbol is declared by the ABI as `extern "C" fn() -> *const SliceDescriptor`; a
    // library exporting the name with another type is not a slice library, which the ABI check
    // below is there to catch as far as it can.
    let symbol = unsafe { library.get::<abi::DescriptorFn>(abi::DESCRIPTOR_SYMBOL_NUL) };
    let describe = symbol.map_err(|_| ContainerError::MissingSymbol {
        artifact: artifact.clone(),
        path: path.to_path_buf(),
        symbol: abi::DESCRIPTOR_SYMBOL,
    })?;
    // SAFETY: calling the descriptor function has no preconditions (ABI contract).
    let descriptor = unsafe { describe() };
    if descriptor.is_null() || !descriptor.is_aligned() {
        return Err(bad(format!("the descriptor function returned a bad pointer {descriptor:p}")));
    }
    // SAFETY: every ABI version starts the descriptor with a u32 version, so this read is valid
    // whatever version the library was built for; nothing else is read before it is checked.
    let found = unsafe { descriptor.cast::<u32>().read() };
    if found != abi::ABI_VERSION {
        return Err(ContainerError::AbiMismatch {
            artifact: artifact.clone(),
            path: path.to_path_buf(),
            expected: abi::ABI_VERSION,
            found,
        });
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
        .map(|s| Ok(SubscriptionInfo { topic: text(s.topic, "topic")?, method: text(s.method, "topic method")? }))
        .collect::<Result<_, String>>()?;
    let schedules = array(d.schedules, "schedules")?
        .iter()
        .map(|s| {
            Ok(ScheduleInfo {
                name: text(s.name, "schedule name")?,
                interval_ms: s.interval_ms,
                method: text(s.method, "schedule method")?,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(SliceInfo {
        name: text(d.name, "name")?,
        version: text(d.version, "version")?,
        methods,
        routes,
        subscriptions,
        schedules,
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
        (Some(start), Some(stop), Some(call), Some(free)) => Ok(EntryPoints { start, stop, call, free }),
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
