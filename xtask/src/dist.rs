//! `cargo xtask dist`: the Debian package of a node (`target/dist/aether_VERSION_ARCH.deb`), its install
//! check in a clean Debian container (`--check`, which also starts the Kubernetes example's node config and
//! init step as three containers), and the check of the Kubernetes manifests (`--check-manifests`, see
//! [`manifests`]). Without a Docker engine `--check` says so and skips the container checks.
//!
//! The package is assembled by hand: the release binaries, the systemd unit and the example config are
//! staged under `target/dist/stage` with the maintainer scripts of `dist/debian/`, and `dpkg-deb --build
//! --root-owner-group` packs the tree. Not cargo-deb: it would be one more tool to install, and a build
//! through it takes minutes where staging and packing take seconds after `cargo build --release`.
//!
//! Invariants:
//! - `dist/aetherd.service` stays the one source of the unit: the packaged copy differs only by the
//!   binary's path (`/usr/local/bin/aetherd` becomes `/usr/bin/aetherd`), and it must pass
//!   `systemd-analyze verify` where that tool exists.
//! - The package's version is the `aetherd` crate's; its architecture is `dpkg --print-architecture`'s.
//! - `/etc/aether/aetherd.toml` is a conffile (an upgrade keeps the operator's edits); the cluster secret is
//!   made by postinst, not shipped, so no two installs share one.

pub mod manifests;

use crate::util::{cargo, root, run, target_dir};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const PACKAGE: &str = "aether";
const SOURCE_BINARY: &str = "/usr/local/bin/aetherd";
const PACKAGED_BINARY: &str = "/usr/bin/aetherd";
const CHECK_IMAGE: &str = "aether-dist-check:bookworm";

pub fn dist(args: &[String]) -> crate::TaskResult {
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => build_deb().map(|deb| println!("built {}", deb.display())),
        ["--check"] => {
            let deb = build_deb()?;
            println!("built {}", deb.display());
            check_install(&deb)?;
            check_statefulset_config(&deb)
        }
        ["--check-manifests"] => {
            let summary = manifests::check_dir(&root().join("dist").join("kubernetes"))?;
            println!("dist/kubernetes: {summary}");
            Ok(())
        }
        _ => Err("usage: cargo xtask dist [--check | --check-manifests]".into()),
    }
}

/// Builds the release binaries and packs the `.deb`; returns its path.
fn build_deb() -> Result<PathBuf, String> {
    let mut build = cargo();
    build.args(["build", "--release", "-p", "aetherd", "-p", "cli"]);
    run(build)?;
    let started = Instant::now();
    let release = target_dir().join("release");
    let dist_src = root().join("dist");
    let version = package_version(&read(&root().join("aetherd").join("Cargo.toml"))?)?;
    let arch = command_output(Command::new("dpkg").arg("--print-architecture"))?;
    let out_dir = target_dir().join("dist");
    let stage = out_dir.join("stage");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|e| format!("{}: {e}", stage.display()))?;
    }
    let unit = packaged_unit(&read(&dist_src.join("aetherd.service"))?)?;
    for (from, to, mode) in [
        (release.join("aetherd"), "usr/bin/aetherd", 0o755),
        (release.join("aether"), "usr/bin/aether", 0o755),
        (dist_src.join("aetherd.toml"), "etc/aether/aetherd.toml", 0o644),
        (dist_src.join("debian").join("postinst"), "DEBIAN/postinst", 0o755),
        (dist_src.join("debian").join("prerm"), "DEBIAN/prerm", 0o755),
        (dist_src.join("debian").join("postrm"), "DEBIAN/postrm", 0o755),
    ] {
        let bytes = std::fs::read(&from).map_err(|e| format!("{}: {e}", from.display()))?;
        write_staged(&stage, to, &bytes, mode)?;
    }
    strip_debug(&stage, &["usr/bin/aetherd", "usr/bin/aether"])?;
    write_staged(&stage, "lib/systemd/system/aetherd.service", unit.as_bytes(), 0o644)?;
    write_staged(&stage, "DEBIAN/conffiles", b"/etc/aether/aetherd.toml\n", 0o644)?;
    let installed_kib = tree_bytes(&stage)?.div_ceil(1024);
    write_staged(&stage, "DEBIAN/control", control(&version, &arch, installed_kib).as_bytes(), 0o644)?;
    verify_unit(&stage)?;
    let deb = out_dir.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    let mut pack = Command::new("dpkg-deb");
    pack.args(["--build", "--root-owner-group"]).arg(&stage).arg(&deb);
    run(pack)?;
    println!("packed in {} ms", started.elapsed().as_millis());
    Ok(deb)
}

/// The `version` of the `[package]` section of a Cargo.toml.
fn package_version(manifest: &str) -> Result<String, String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(value) = line.strip_prefix("version").map(str::trim).and_then(|v| v.strip_prefix('=')) {
                let version = value.trim().trim_matches('"');
                let valid = !version.is_empty()
                    && version.starts_with(|c: char| c.is_ascii_digit())
                    && version.chars().all(|c| c.is_ascii_alphanumeric() || ".+-~".contains(c));
                return if valid {
                    Ok(version.to_owned())
                } else {
                    Err(format!("'{version}' is not a package version"))
                };
            }
        }
    }
    Err("aetherd/Cargo.toml has no [package] version".into())
}

/// `dist/aetherd.service` with the binary at its packaged path.
fn packaged_unit(source: &str) -> Result<String, String> {
    let exec = format!("ExecStart={SOURCE_BINARY} ");
    if source.lines().filter(|l| l.starts_with(&exec)).count() != 1 {
        return Err(format!("dist/aetherd.service has no single `{exec}...` line"));
    }
    Ok(source.replace(SOURCE_BINARY, PACKAGED_BINARY))
}

fn control(version: &str, arch: &str, installed_kib: u64) -> String {
    format!(
        "Package: {PACKAGE}
Version: {version}
Architecture: {arch}
Maintainer: Aether maintainers <aether@localhost>
Installed-Size: {installed_kib}
Depends: libc6, libgcc-s1, passwd
Section: net
Priority: optional
Description: Aether distributed runtime node
 aetherd runs one node of an Aether cluster under systemd (aetherd.service); aether is its command-line
 client. The example config in /etc/aether/aetherd.toml runs a single node on loopback.
"
    )
}

/// `systemd-analyze verify` of the staged unit, its ExecStart pointed at the staged binary (skipped, with a
/// line saying so, where systemd-analyze is not installed).
fn verify_unit(stage: &Path) -> crate::TaskResult {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        println!("skipped systemd-analyze verify of the packaged unit: systemd-analyze is not installed");
        return Ok(());
    }
    let unit = read(&stage.join("lib/systemd/system/aetherd.service"))?;
    let binary = stage.join("usr/bin/aetherd");
    let copy_dir = target_dir().join("dist").join("unit-check");
    std::fs::create_dir_all(&copy_dir).map_err(|e| format!("{}: {e}", copy_dir.display()))?;
    let copy = copy_dir.join("aetherd.service");
    let exec = format!("ExecStart={PACKAGED_BINARY} ");
    std::fs::write(&copy, unit.replace(&exec, &format!("ExecStart={} ", binary.display())))
        .map_err(|e| format!("{}: {e}", copy.display()))?;
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .map_err(|e| format!("systemd-analyze verify: {e}"))?;
    let complaints = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if !output.status.success() || !complaints.is_empty() {
        return Err(format!("systemd-analyze verify refuses the packaged unit: {complaints}"));
    }
    println!("systemd-analyze verify: the packaged unit is clean");
    Ok(())
}

/// Installs the package in a clean Debian container and runs `dist/check-deb-install.sh` there.
fn check_install(deb: &Path) -> crate::TaskResult {
    let docker = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
    if !docker.is_ok_and(|o| o.status.success()) {
        println!("skipped the install check: no Docker engine answers `docker version`");
        return Ok(());
    }
    if !image_exists(CHECK_IMAGE) {
        let rootfs = target_dir().join("dist").join("rootfs-bookworm");
        if !rootfs.join("etc").join("debian_version").exists() {
            if Command::new("debootstrap").arg("--version").output().is_err() {
                println!(
                    "skipped the install check: no image {CHECK_IMAGE} and no debootstrap to make one \
                     (apt-get install debootstrap)"
                );
                return Ok(());
            }
            let mut bootstrap = Command::new("debootstrap");
            bootstrap.args(["--variant=minbase", "bookworm"]).arg(&rootfs).arg("http://deb.debian.org/debian");
            run(bootstrap)?;
        }
        import_image(&rootfs, CHECK_IMAGE)?;
    }
    let script = root().join("dist").join("check-deb-install.sh");
    let started = Instant::now();
    let mut check = Command::new("docker");
    check
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!("{}:/pkg/aether.deb:ro", absolute(deb)?.display()))
        .arg("-v")
        .arg(format!("{}:/check-deb-install.sh:ro", script.display()))
        .args([CHECK_IMAGE, "/bin/bash", "/check-deb-install.sh"]);
    run(check)?;
    println!("install check passed in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The Kubernetes example's node config and init step, without Kubernetes: one container per replica on a
/// Docker network where each answers to its pod's DNS name, the init container's script writing the config
/// from `dist/kubernetes/aetherd.toml`, then aetherd; every node must answer `/health/ready` with 200 (a
/// quorum of the pod-named nodes formed). Runs after [`check_install`], on its image with the package.
fn check_statefulset_config(deb: &Path) -> crate::TaskResult {
    if !image_exists(CHECK_IMAGE) {
        return Ok(());
    }
    let k8s = root().join("dist").join("kubernetes");
    let sts: serde_json::Value =
        serde_json::from_str(&read(&k8s.join("statefulset.json"))?).map_err(|e| format!("statefulset.json: {e}"))?;
    let init = sts["spec"]["template"]["spec"]["initContainers"][0]["command"][2]
        .as_str()
        .ok_or("statefulset.json: the init container has no script")?;
    let replicas =
        sts["spec"]["replicas"].as_u64().filter(|r| (1..=9).contains(r)).ok_or("statefulset.json: replicas")?;
    let work = target_dir().join("dist").join("statefulset-check");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    std::fs::write(work.join("init.sh"), init).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut random = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").map_err(|e| e.to_string())?, &mut random)
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    let secret = work.join("secret");
    std::fs::write(&secret, random.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .map_err(|e| format!("{}: {e}", secret.display()))?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o444))
        .map_err(|e| format!("{}: {e}", secret.display()))?;
    let names: Vec<String> = (0..replicas).map(|i| format!("aether-dist-check-{i}")).collect();
    let cleanup = |names: &[String]| {
        let _ = docker(&[&["rm", "-f"], &names.iter().map(String::as_str).collect::<Vec<_>>()[..]].concat());
        let _ = docker(&["network", "rm", "aether-dist-check"]);
        let _ = docker(&["rmi", "aether-dist-check-pod"]);
    };
    cleanup(&names);
    let started = Instant::now();
    let result = (|| {
        let deb = absolute(deb)?;
        let base = format!("{}:/pkg/aether.deb:ro", deb.display());
        docker(&[
            "run",
            "--name",
            "aether-dist-check-base",
            "--network",
            "none",
            "-v",
            &base,
            CHECK_IMAGE,
            "dpkg",
            "-i",
            "/pkg/aether.deb",
        ])?;
        docker(&["commit", "aether-dist-check-base", "aether-dist-check-pod"])?;
        docker(&["rm", "aether-dist-check-base"])?;
        docker(&["network", "create", "aether-dist-check"])?;
        let template = format!("{}:/config-template/aetherd.toml:ro", k8s.join("aetherd.toml").display());
        let secret = format!("{}:/cluster-secret/secret:ro", secret.display());
        let init = format!("{}:/init.sh:ro", work.join("init.sh").display());
        // As in the pod: the init script and the node run as the unprivileged user, /run/aether is theirs.
        let pod = "install -d -o aether -g aether /run/aether; runuser -u aether -- /bin/sh -ec \"$(cat /init.sh)\"; \
                   exec runuser -u aether -- /usr/bin/aetherd --config /run/aether/aetherd.toml";
        for (i, name) in names.iter().enumerate() {
            let alias = format!("aether-{i}.aether.aether.svc.cluster.local");
            let env = format!("POD_NAME=aether-{i}");
            docker(&[
                "run",
                "-d",
                "--name",
                name,
                "--network",
                "aether-dist-check",
                "--network-alias",
                &alias,
                "-e",
                &env,
                "-v",
                &template,
                "-v",
                &secret,
                "-v",
                &init,
                "aether-dist-check-pod",
                "/bin/sh",
                "-ec",
                pod,
            ])?;
        }
        let ready = "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health/ready HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\
                     Connection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q '^HTTP/1.1 200'";
        for name in &names {
            let deadline = Instant::now() + std::time::Duration::from_secs(30);
            while docker(&["exec", name, "bash", "-c", ready]).is_err() {
                if Instant::now() > deadline {
                    let logs = docker(&["logs", name]).unwrap_or_default();
                    return Err(format!("{name} did not answer /health/ready with 200 within 30 s:\n{logs}"));
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
        Ok(())
    })();
    if result.is_err() {
        for name in &names {
            if let Ok(logs) = Command::new("docker").args(["logs", "--tail", "20", name]).output() {
                eprintln!(
                    "--- {name}\n{}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
        }
    }
    cleanup(&names);
    result?;
    println!(
        "the Kubernetes example's config and init step formed a {replicas}-node cluster in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `docker ARGS`; its stdout, or an error with its stderr.
fn docker(args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker").args(args).output().map_err(|e| format!("cannot run docker: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("docker {}: {}", args.first().unwrap_or(&""), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `tar -C rootfs -c . | docker import - image`: an image from a local root file system, no registry.
fn import_image(rootfs: &Path, image: &str) -> crate::TaskResult {
    eprintln!("$ tar -C {} -c . | docker import - {image}", rootfs.display());
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let stdout = tar.stdout.take().ok_or("tar has no stdout")?;
    let imported = Command::new("docker")
        .args(["import", "-", image])
        .stdin(stdout)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run docker import: {e}"));
    let tarred = tar.wait().map_err(|e| format!("tar: {e}"))?;
    if !imported?.success() || !tarred.success() {
        return Err(format!("importing {} as {image} failed", rootfs.display()));
    }
    Ok(())
}

fn write_staged(stage: &Path, relative: &str, bytes: &[u8], mode: u32) -> crate::TaskResult {
    let path = stage.join(relative);
    let mut dir = path.parent().map(Path::to_path_buf);
    if let Some(parent) = &dir {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    // Every directory of the tree is 0755 whatever the umask, as installed directories are.
    while let Some(d) = dir.filter(|d| d.starts_with(stage)) {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", d.display()))?;
        dir = d.parent().map(Path::to_path_buf);
    }
    std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Drops the debug sections of the staged binaries (over 80% of their size, and most of the packing time);
/// their dynamic symbols, which slices link against, stay. Skipped with a line where `strip` is missing.
fn strip_debug(stage: &Path, binaries: &[&str]) -> crate::TaskResult {
    if Command::new("strip").arg("--version").output().is_err() {
        println!("not stripping debug sections: strip (binutils) is not installed");
        return Ok(());
    }
    let mut strip = Command::new("strip");
    strip.arg("--strip-debug").args(binaries.iter().map(|b| stage.join(b)));
    run(strip)
}

/// Bytes of the files that will be installed (the DEBIAN folder excluded).
fn tree_bytes(dir: &Path) -> Result<u64, String> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        if path.is_dir() {
            if entry.file_name() != "DEBIAN" {
                total += tree_bytes(&path)?;
            }
        } else {
            total += entry.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
        }
    }
    Ok(total)
}

fn command_output(command: &mut Command) -> Result<String, String> {
    let shown = format!("{command:?}").replace('"', "");
    let output = command.output().map_err(|e| format!("cannot run {shown}: {e}"))?;
    if !output.status.success() {
        return Err(format!("{shown} failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!("{shown} printed '{text}'"));
    }
    Ok(text)
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_package_sections() {
        let manifest = "[workspace]\nversion = \"9.9.9\"\n[package]\nname = \"aetherd\"\nversion = \"0.1.0\"\n";
        assert_eq!(package_version(manifest).unwrap(), "0.1.0");
        assert!(package_version("[package]\nname = \"x\"\n").is_err());
        assert!(package_version("[package]\nversion = \"1.0; rm -rf\"\n").is_err());
        assert!(package_version(&read(&root().join("aetherd").join("Cargo.toml")).unwrap()).is_ok());
    }

    #[test]
    fn the_packaged_unit_is_the_source_unit_with_the_packaged_path() {
        let source = read(&root().join("dist").join("aetherd.service")).unwrap();
        let unit = packaged_unit(&source).unwrap();
        assert!(unit.lines().any(|l| l == "ExecStart=/usr/bin/aetherd --config /etc/aether/aetherd.toml"));
        assert!(!unit.contains(SOURCE_BINARY));
        let other: Vec<_> = source.lines().zip(unit.lines()).filter(|(a, b)| a != b).collect();
        assert!(other.iter().all(|(a, _)| a.contains(SOURCE_BINARY)), "{other:?}");
        assert!(packaged_unit("[Service]\nExecStart=/opt/aetherd\n").is_err());
    }

    /// The packaged config, the unit and the maintainer scripts agree on the paths the node needs.
    #[test]
    fn config_unit_and_scripts_agree_on_paths() {
        let config = read(&root().join("dist").join("aetherd.toml")).unwrap();
        let unit = read(&root().join("dist").join("aetherd.service")).unwrap();
        let postinst = read(&root().join("dist").join("debian").join("postinst")).unwrap();
        let postrm = read(&root().join("dist").join("debian").join("postrm")).unwrap();
        assert!(config.lines().any(|l| l == "data_dir = \"/var/lib/aether\""));
        assert!(config.lines().any(|l| l == "secret_file = \"/etc/aether/secret\""));
        assert!(unit.lines().any(|l| l == "ReadWritePaths=/var/lib/aether"));
        assert!(unit.contains("--config /etc/aether/aetherd.toml"));
        assert!(postinst.contains("install -d -m 0700 -o aether -g aether /var/lib/aether"));
        assert!(postinst.contains("mv \"$tmp\" /etc/aether/secret"));
        // Data goes only on purge.
        let (before_purge, purge) = postrm.split_once("\npurge)").unwrap();
        let remove = before_purge.split_once("\nremove)").unwrap().1;
        assert!(purge.contains("rm -rf /var/lib/aether") && !remove.contains("rm "));
    }

    #[test]
    fn the_control_file_names_package_version_and_arch() {
        let text = control("0.1.0", "amd64", 12345);
        for line in ["Package: aether", "Version: 0.1.0", "Architecture: amd64", "Installed-Size: 12345"] {
            assert!(text.lines().any(|l| l == line), "{line}");
        }
        assert!(
            text.ends_with('\n')
                && text.lines().skip_while(|l| !l.starts_with("Description:")).skip(1).all(|l| l.starts_with(' '))
        );
    }
}
