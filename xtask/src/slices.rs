//! `cargo xtask build-slices` and `cargo xtask bench invoke-local`.
//!
//! `build-slices` builds every example slice in release mode and lays the libraries out as a
//! Maven-style repository: `{target}/slices-repo/{group as path}/{artifact}/{version}/{artifact}-{version}.so`,
//! where `{target}` is `$CARGO_TARGET_DIR` or the workspace's `target/`. Files are written under a
//! temporary name and renamed into place, so a reader never sees half a library. Beside each library it
//! writes the checksum file nodes verify before loading (`{file}.sha256`), and, when a signing key is
//! given (`--sign-key FILE` or `$AETHER_SLICE_SIGNING_KEY`, see `cargo xtask keygen`), its signature
//! (`{file}.sig`). With `--publish URL` (a node's management address, `http://host:port`) it then uploads
//! every example slice to the cluster's repository (`PUT {URL}/repository/{path}`, with its SHA-256 and
//! signature headers, and `Authorization: Bearer $AETHER_API_KEY` when that is set); a release the
//! repository already holds with the same bytes counts as published, one with other bytes is an error.
//!
//! `bench invoke-local` builds the slices, then runs the container's `invoke_bench` example, which
//! measures a call through the container against the same function called directly.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Group of the example slices, and of the slices that exist only to test the host.
const EXAMPLES: &str = "org.aether.examples";
const TESTS: &str = "org.aether.tests";

/// One slice crate: cargo package, library file stem, artifact coordinates.
struct SliceCrate {
    package: &'static str,
    group: &'static str,
    lib: &'static str,
    artifact: &'static str,
    version: &'static str,
}

const SLICES: &[SliceCrate] = &[
    SliceCrate { package: "slice-echo", group: EXAMPLES, lib: "slice_echo", artifact: "echo", version: "1.0.0" },
    SliceCrate { package: "slice-echo-v2", group: EXAMPLES, lib: "slice_echo_v2", artifact: "echo", version: "2.0.0" },
    SliceCrate {
        package: "slice-counter",
        group: EXAMPLES,
        lib: "slice_counter",
        artifact: "counter",
        version: "1.0.0",
    },
    SliceCrate { package: "slice-orders", group: EXAMPLES, lib: "slice_orders", artifact: "orders", version: "1.0.0" },
    SliceCrate {
        package: "slice-orders-v2",
        group: EXAMPLES,
        lib: "slice_orders_v2",
        artifact: "orders",
        version: "2.0.0",
    },
    SliceCrate {
        package: "slice-inventory",
        group: EXAMPLES,
        lib: "slice_inventory",
        artifact: "inventory",
        version: "1.0.0",
    },
    SliceCrate {
        package: "slice-inventory-v2",
        group: EXAMPLES,
        lib: "slice_inventory_v2",
        artifact: "inventory",
        version: "2.0.0",
    },
    SliceCrate {
        package: "slice-pricing",
        group: EXAMPLES,
        lib: "slice_pricing",
        artifact: "pricing",
        version: "1.0.0",
    },
    SliceCrate {
        package: "slice-shortener",
        group: EXAMPLES,
        lib: "slice_shortener",
        artifact: "shortener",
        version: "1.0.0",
    },
    SliceCrate { package: "slice-ticker", group: EXAMPLES, lib: "slice_ticker", artifact: "ticker", version: "1.0.0" },
    SliceCrate { package: "slice-faulty", group: EXAMPLES, lib: "slice_faulty", artifact: "faulty", version: "1.0.0" },
    SliceCrate { package: "slice-ledger", group: EXAMPLES, lib: "slice_ledger", artifact: "ledger", version: "1.0.0" },
    SliceCrate { package: "slice-inbox", group: EXAMPLES, lib: "slice_inbox", artifact: "inbox", version: "1.0.0" },
    SliceCrate {
        package: "slice-abi-mismatch",
        group: TESTS,
        lib: "slice_abi_mismatch",
        artifact: "abi-mismatch",
        version: "1.0.0",
    },
];

fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let cwd = std::env::current_dir().unwrap_or_else(|_| root.to_path_buf());
            if dir.is_absolute() {
                dir
            } else {
                cwd.join(dir)
            }
        }
        None => root.join("target"),
    }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

const BUILD_USAGE: &str = "usage: cargo xtask build-slices [--repo DIR] [--sign-key FILE] [--publish URL]";

/// `cargo xtask build-slices [--repo DIR] [--sign-key FILE] [--publish URL]`.
pub fn build_slices(args: &[String]) -> crate::TaskResult {
    let root = workspace_root();
    let target = target_dir(&root);
    let mut repo = target.join("slices-repo");
    let mut key_file = std::env::var_os("AETHER_SLICE_SIGNING_KEY").filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut publish = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or(BUILD_USAGE)?;
        match flag.as_str() {
            "--repo" => repo = PathBuf::from(value),
            "--sign-key" => key_file = Some(PathBuf::from(value)),
            "--publish" => publish = Some(management_address(value)?),
            _ => return Err(BUILD_USAGE.into()),
        }
    }
    let key = key_file.as_deref().map(crate::signing::read_signing_key).transpose()?;
    build_release(&root, &target)?;
    for slice in SLICES {
        install(&target, &repo, slice, key.as_ref())?;
    }
    println!("slices: {} artifacts in {}", SLICES.len(), repo.display());
    if let Some(addr) = publish {
        for slice in SLICES.iter().filter(|s| s.group == EXAMPLES) {
            publish_one(addr, &repo, slice)?;
        }
    }
    Ok(())
}

/// `http://host:port` (or `host:port`) to the address it names; TLS is not spoken here.
fn management_address(url: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if url.starts_with("https://") {
        return Err(format!("--publish {url}: only http:// is supported; use `aether artifact push` over TLS"));
    }
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let mut addrs = host.to_socket_addrs().map_err(|e| format!("--publish {url}: {e}"))?;
    addrs.next().ok_or_else(|| format!("--publish {url}: no address"))
}

/// The repository path of a slice's library.
fn repository_path(slice: &SliceCrate) -> String {
    let (group, artifact, version) = (slice.group.replace('.', "/"), slice.artifact, slice.version);
    format!("{group}/{artifact}/{version}/{artifact}-{version}.so")
}

fn publish_one(addr: std::net::SocketAddr, repo: &Path, slice: &SliceCrate) -> crate::TaskResult {
    let path = repository_path(slice);
    let file = repo.join(&path);
    let bytes = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let sha256 = container::integrity::to_hex(&container::integrity::sha256(&bytes));
    let signature = std::fs::read_to_string(container::integrity::signature_file(&file)).ok();
    let key = std::env::var("AETHER_API_KEY").ok().filter(|k| !k.is_empty()).map(|k| format!("Bearer {k}"));
    let mut headers = vec![("X-Aether-Sha256", sha256.as_str())];
    if let Some(signature) = signature.as_deref() {
        headers.push(("X-Aether-Signature", signature.trim()));
    }
    if let Some(key) = key.as_deref() {
        headers.push(("Authorization", key));
    }
    let answer = devcluster::http_with(addr, "PUT", &format!("/repository/{path}"), &headers, &bytes)
        .map_err(|e| format!("publishing {path} to {addr}: {e}"))?;
    match answer.status {
        201 => println!("published {path}"),
        200 => println!("already published {path}"),
        status => return Err(format!("publishing {path} to {addr}: {status} {}", answer.text())),
    }
    Ok(())
}

fn build_release(root: &Path, target: &Path) -> crate::TaskResult {
    let mut command = cargo();
    command.current_dir(root).env("CARGO_TARGET_DIR", target).args(["build", "--release", "--quiet"]);
    // Debug info is most of a slice library's size, and every load copies the file.
    command.args(["--config", "profile.release.strip=\"debuginfo\""]);
    for slice in SLICES {
        command.args(["-p", slice.package]);
    }
    let status = command.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the slices failed ({status})"));
    }
    Ok(())
}

fn install(
    target: &Path,
    repo: &Path,
    slice: &SliceCrate,
    key: Option<&ed25519_dalek::SigningKey>,
) -> crate::TaskResult {
    let built = target.join("release").join(format!("lib{}.so", slice.lib));
    let dir = repo.join(slice.group.replace('.', "/")).join(slice.artifact).join(slice.version);
    let file = dir.join(format!("{}-{}.so", slice.artifact, slice.version));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let bytes = std::fs::read(&built).map_err(|e| format!("cannot read {}: {e}", built.display()))?;
    crate::signing::install_library(&file, &bytes, key)
}

/// `cargo xtask bench invoke-local [--rounds N]`; writes `{target}/bench/invoke-local.json`.
pub fn bench_invoke_local(args: &[String]) -> crate::TaskResult {
    let root = workspace_root();
    let target = target_dir(&root);
    let repo = target.join("slices-repo");
    build_slices(&[])?;
    let status = cargo()
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .args(["run", "--release", "--quiet", "-p", "container", "--example", "invoke_bench", "--"])
        .arg("--repo")
        .arg(&repo)
        .arg("--json")
        .arg(target.join("bench").join("invoke-local.json"))
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("the benchmark failed ({status})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_targets_are_plain_http_addresses_and_maven_paths() {
        assert_eq!(management_address("http://127.0.0.1:8080/").unwrap().port(), 8080);
        assert_eq!(management_address("127.0.0.1:9").unwrap().port(), 9);
        assert!(management_address("https://127.0.0.1:8080").is_err());
        assert!(management_address("http://no-port").is_err());
        assert_eq!(repository_path(&SLICES[0]), "org/aether/examples/echo/1.0.0/echo-1.0.0.so");
    }
}
