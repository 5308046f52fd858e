//! TLS on the HTTP ports as an operator meets it: a development CA and a server certificate signed by it
//! (what `cargo xtask certs` writes), a node with `[tls]`, and `curl --cacert` against both ports, on the
//! name and on the address. Skipped with a message when `curl` is not installed.

use devcluster::{example_slices_repo, wait_for, ClusterSpec, LocalCluster};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const ECHO: &str = "name = \"tls\"\n[[slices]]\nartifact = \"org.aether.examples:echo:1.0.0\"\n";

/// A CA and a leaf for `localhost` and 127.0.0.1 signed by it, written as PEM files into `dir`.
fn write_ca_and_leaf(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "test development CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf_params.distinguished_name.push(DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("http.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("http.key"), leaf_key.serialize_pem()).unwrap();
}

/// `curl --cacert` with a method and body: (status, body), or why curl failed.
fn curl(ca: &Path, method: &str, url: &str, body: Option<&str>) -> Result<(u16, String), String> {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "5", "--cacert"]).arg(ca).args(["-X", method, "-w", "\n%{http_code}"]);
    if let Some(body) = body {
        command.args(["--data-binary", body]);
    }
    let out = command.arg(url).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').ok_or("no status line")?;
    Ok((code.trim().parse().map_err(|_| format!("bad status in {text}"))?, body.to_string()))
}

#[test]
fn curl_with_the_dev_ca_reaches_both_ports_and_plain_http_is_not_answered() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl is not installed; skipping");
        return;
    }
    let dir = std::env::temp_dir().join(format!("aether-tls-curl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let repo = example_slices_repo().unwrap();
    let mut spec = ClusterSpec::new(1, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")));
    spec.extra_args = vec!["--repo".into(), repo.display().to_string()];
    let mut c = LocalCluster::prepare(spec).unwrap();
    write_ca_and_leaf(&dir);
    let mut config = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    config.push_str(&format!("[tls]\ncert_file = \"{0}/http.pem\"\nkey_file = \"{0}/http.key\"\n", dir.display()));
    std::fs::write(&c.nodes[0].config, config).unwrap();
    c.start_node(0).unwrap();
    let ca = dir.join("ca.pem");
    let (management, app) = (c.nodes[0].management, c.nodes[0].app);

    let health = format!("https://localhost:{}/health/ready", management.port());
    let ready = wait_for(Duration::from_secs(30), || curl(&ca, "GET", &health, None).is_ok_and(|(s, _)| s == 200));
    assert!(ready.is_ok(), "{:?}\n{}", curl(&ca, "GET", &health, None), c.log(0));
    let blueprints = format!("https://127.0.0.1:{}/api/blueprints", management.port());
    let (status, body) = curl(&ca, "POST", &blueprints, Some(ECHO)).unwrap();
    assert_eq!(status, 201, "{body}");
    let echo = format!("https://localhost:{}/echo/over-tls", app.port());
    let served = wait_for(Duration::from_secs(30), || {
        curl(&ca, "GET", &echo, None).is_ok_and(|(s, b)| s == 200 && b.contains("over-tls"))
    });
    assert!(served.is_ok(), "{}", c.log(0));

    // Without the CA, curl refuses the certificate; plain HTTP on a TLS port gets no HTTP answer.
    let untrusted = Command::new("curl").args(["-sS", "--max-time", "5", &echo]).output().unwrap();
    assert!(!untrusted.status.success(), "curl trusted a development certificate without its CA");
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{}/health/live", management.port()))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout).trim(), "200");
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}
