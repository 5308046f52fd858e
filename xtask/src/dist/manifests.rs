//! The check of the Kubernetes example in `dist/kubernetes/` (`cargo xtask dist --check-manifests`, and a
//! unit test, so `cargo xtask test` runs it).
//!
//! The objects are JSON files (JSON is YAML, so kubectl and kustomize read them, and serde_json, already a
//! dependency, parses them exactly; the workspace has no YAML parser). `kustomization.yaml` and the node
//! config template `aetherd.toml` are read line by line for the few keys checked. kubeconform, when
//! installed, also validates the objects against the Kubernetes schemas.
//!
//! What holds when the check passes:
//! - kustomization.yaml lists exactly the JSON files of the folder, a namespace, and generates the
//!   ConfigMap `aether-config` from aetherd.toml;
//! - one StatefulSet, a headless Service (its `serviceName`, publishing not-ready addresses so peers resolve
//!   before they are ready), a client Service and a PodDisruptionBudget with `maxUnavailable: 1`;
//! - every selector matches the pod template's labels;
//! - the config's peers are `aether-I@aether-I.<headless>.<namespace>.svc.cluster.local:<cluster port>` for
//!   every replica, and its listen ports are the container ports the Services and probes use;
//! - the init container runs the node's image, whose tag is aetherd's version;
//! - readiness probes `/health/ready` and liveness `/health/live` on the management port; the data dir is
//!   the claim template's mount; the config and secret volumes name the generated ConfigMap and a Secret.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const CONFIG_MAP: &str = "aether-config";
const CONFIG_FILE: &str = "aetherd.toml";

/// Checks the folder; returns a one-line summary.
pub fn check_dir(dir: &Path) -> Result<String, String> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let kustomization = read("kustomization.yaml")?;
    let config = read(CONFIG_FILE)?;
    let mut json_files: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.ends_with(".json"))
        .collect();
    json_files.sort();
    let mut docs = Vec::new();
    for name in &json_files {
        let value: Value = serde_json::from_str(&read(name)?).map_err(|e| format!("{name}: {e}"))?;
        docs.push((name.clone(), value));
    }
    let summary = check(&kustomization, &docs, &config)?;
    let version = super::package_version(&super::read(&crate::util::root().join("aetherd").join("Cargo.toml"))?)?;
    let sts = docs.iter().map(|(_, d)| d).find(|d| d["kind"] == "StatefulSet").ok_or("no StatefulSet")?;
    let image = sts["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap_or_default();
    if image.rsplit_once(':').map(|(_, tag)| tag) != Some(version.as_str()) {
        return Err(format!("the StatefulSet runs image '{image}'; its tag should be aetherd's version {version}"));
    }
    Ok(match kubeconform(dir, &json_files) {
        Some(result) => format!("{summary}; kubeconform: {}", result?),
        None => format!("{summary}; kubeconform not installed, schemas not checked"),
    })
}

fn kubeconform(dir: &Path, files: &[String]) -> Option<Result<String, String>> {
    Command::new("kubeconform").arg("-v").output().ok()?;
    let output = Command::new("kubeconform").args(["-strict", "-summary"]).args(files).current_dir(dir).output();
    Some(match output {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        Ok(o) => {
            Err(format!("kubeconform: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
        }
        Err(e) => Err(format!("kubeconform: {e}")),
    })
}

/// The check itself, on the folder's texts and parsed JSON files (`(file name, object)`).
pub fn check(kustomization: &str, docs: &[(String, Value)], config: &str) -> Result<String, String> {
    let kust = Kustomization::parse(kustomization)?;
    let mut listed = kust.resources.clone();
    listed.sort();
    let mut present: Vec<String> = docs.iter().map(|(n, _)| n.clone()).collect();
    present.sort();
    if listed != present {
        return Err(format!("kustomization.yaml lists {listed:?} but the folder has {present:?}"));
    }
    if kust.config_map.as_deref() != Some(CONFIG_MAP) || !kust.config_files.iter().any(|f| f == CONFIG_FILE) {
        return Err(format!("kustomization.yaml must generate the ConfigMap {CONFIG_MAP} from {CONFIG_FILE}"));
    }
    for (name, doc) in docs {
        for field in ["apiVersion", "kind"] {
            if doc[field].as_str().is_none_or(str::is_empty) {
                return Err(format!("{name}: no {field}"));
            }
        }
        if doc["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            return Err(format!("{name}: no metadata.name"));
        }
    }
    let of_kind = |kind: &str| docs.iter().filter(move |(_, d)| d["kind"] == kind).collect::<Vec<_>>();
    let [(_, sts)] = of_kind("StatefulSet")[..] else { return Err("there must be exactly one StatefulSet".into()) };
    let [(_, pdb)] = of_kind("PodDisruptionBudget")[..] else {
        return Err("there must be exactly one PodDisruptionBudget".into());
    };
    let services = of_kind("Service");
    let headless: Vec<_> = services.iter().filter(|(_, s)| s["spec"]["clusterIP"] == "None").collect();
    let [(_, headless)] = headless[..] else { return Err("there must be exactly one headless Service".into()) };
    if services.len() != 2 {
        return Err(format!("expected a headless and a client Service, found {} Services", services.len()));
    }
    let client =
        services.iter().map(|(_, s)| s).find(|s| s["spec"]["clusterIP"] != "None").ok_or("no client Service")?;

    let spec = &sts["spec"];
    let headless_name = headless["metadata"]["name"].as_str().unwrap_or_default();
    if spec["serviceName"] != headless_name {
        return Err(format!("the StatefulSet's serviceName is not the headless Service '{headless_name}'"));
    }
    if headless["spec"]["publishNotReadyAddresses"] != true {
        return Err("the headless Service must publish not-ready addresses (peers resolve before quorum)".into());
    }
    if spec["podManagementPolicy"] != "Parallel" {
        return Err("podManagementPolicy must be Parallel: a pod is ready only once a quorum runs".into());
    }
    let replicas = spec["replicas"].as_u64().ok_or("the StatefulSet has no replicas")?;
    let labels = labels(&spec["template"]["metadata"]["labels"]).ok_or("the pod template has no labels")?;
    let selects = |selector: &Value, what: &str| match self::labels(selector) {
        Some(wanted) if !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v)) => Ok(()),
        _ => Err(format!("the {what} selector does not match the pod template's labels {labels:?}")),
    };
    selects(&spec["selector"]["matchLabels"], "StatefulSet")?;
    selects(&pdb["spec"]["selector"]["matchLabels"], "PodDisruptionBudget")?;
    selects(&headless["spec"]["selector"], "headless Service")?;
    selects(&client["spec"]["selector"], "client Service")?;
    if pdb["spec"]["maxUnavailable"] != 1 {
        return Err("the PodDisruptionBudget must have maxUnavailable: 1".into());
    }

    let config = NodeConfig::parse(config)?;
    let sts_name = sts["metadata"]["name"].as_str().unwrap_or_default();
    let expected: Vec<String> = (0..replicas)
        .map(|i| {
            format!(
                "{sts_name}-{i}@{sts_name}-{i}.{headless_name}.{}.svc.cluster.local:{}",
                kust.namespace,
                config.port("cluster").unwrap_or(0)
            )
        })
        .collect();
    if config.peers != expected {
        return Err(format!("aetherd.toml's peers are {:?}, the StatefulSet needs {expected:?}", config.peers));
    }
    if config.node_id != "@POD_NAME@" {
        return Err("aetherd.toml's node id must be @POD_NAME@ (the init container replaces it)".into());
    }

    let pod = &spec["template"]["spec"];
    let containers = pod["containers"].as_array().ok_or("the pod has no containers")?;
    let [node] = &containers[..] else { return Err("the pod must have one container".into()) };
    let inits = pod["initContainers"].as_array().ok_or("the pod has no init container (it writes the config)")?;
    if inits.iter().any(|init| init["image"] != node["image"]) {
        return Err("the init container must run the node's image (its script needs sed and getent from it)".into());
    }
    let mut container_ports = BTreeMap::new();
    for port in node["ports"].as_array().ok_or("the container has no ports")? {
        let name = port["name"].as_str().ok_or("a container port has no name")?;
        container_ports.insert(name.to_owned(), port["containerPort"].as_u64().ok_or("a port has no number")?);
    }
    for listen in ["management", "app", "cluster"] {
        let wanted = config.port(listen).ok_or(format!("aetherd.toml has no listen.{listen}"))?;
        if container_ports.get(listen) != Some(&wanted) {
            return Err(format!("container port '{listen}' is not listen.{listen}'s port {wanted}"));
        }
    }
    let service_ports = |service: &Value| -> Result<Vec<(String, u64)>, String> {
        let ports = service["spec"]["ports"].as_array().ok_or("a Service has no ports")?;
        ports.iter().map(|p| target_port(p, &container_ports)).collect()
    };
    let cluster_port = config.port("cluster").unwrap_or(0);
    if service_ports(headless)? != [("cluster".to_owned(), cluster_port)] {
        return Err("the headless Service must expose the cluster port, as 'cluster'".into());
    }
    let mut client_ports = service_ports(client)?;
    client_ports.sort();
    let wanted_client = [
        ("app".to_owned(), config.port("app").unwrap_or(0)),
        ("management".to_owned(), config.port("management").unwrap_or(0)),
    ];
    if client_ports != wanted_client {
        return Err(format!("the client Service must expose management and app; it exposes {client_ports:?}"));
    }
    for (probe, path) in [("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")] {
        let get = &node[probe]["httpGet"];
        let port = target_port(&serde_json::json!({"name": "", "targetPort": get["port"]}), &container_ports)?;
        if get["path"] != path || port.1 != config.port("management").unwrap_or(0) {
            return Err(format!("{probe} must GET {path} on the management port"));
        }
    }

    let mounts = node["volumeMounts"].as_array().ok_or("the container has no volume mounts")?;
    let mount_of = |path: &str| mounts.iter().find(|m| m["mountPath"] == path).and_then(|m| m["name"].as_str());
    let claims = spec["volumeClaimTemplates"].as_array().ok_or("the StatefulSet has no volume claim template")?;
    match mount_of(&config.data_dir) {
        Some(name) if claims.iter().any(|c| c["metadata"]["name"] == name) => {}
        _ => return Err(format!("the data dir {} is not a volume claim template's mount", config.data_dir)),
    }
    let volumes = pod["volumes"].as_array().ok_or("the pod has no volumes")?;
    if !volumes.iter().any(|v| v["configMap"]["name"] == CONFIG_MAP) {
        return Err(format!("no volume of the ConfigMap {CONFIG_MAP}"));
    }
    if !volumes.iter().any(|v| v["secret"]["secretName"].as_str().is_some_and(|s| !s.is_empty())) {
        return Err("no volume of the cluster Secret".into());
    }
    let args: Vec<&str> =
        node["args"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let config_path = args.windows(2).find(|w| w[0] == "--config").map(|w| w[1]).ok_or("aetherd gets no --config")?;
    if !mounts.iter().filter_map(|m| m["mountPath"].as_str()).any(|m| config_path.starts_with(&format!("{m}/"))) {
        return Err(format!("--config {config_path} is on no volume"));
    }
    if !config.secret_file.starts_with(config_path.rsplit_once('/').map(|(d, _)| d).unwrap_or("/")) {
        return Err(format!("the secret {} is not beside the generated config {config_path}", config.secret_file));
    }
    Ok(format!("{} objects, {replicas} replicas, ports agree with {CONFIG_FILE}", docs.len()))
}

/// A Service port (or a probe's) as (container port name, number), resolving a named target port.
fn target_port(port: &Value, container_ports: &BTreeMap<String, u64>) -> Result<(String, u64), String> {
    let target = &port["targetPort"];
    let found = match (target.as_str(), target.as_u64()) {
        (Some(name), _) => container_ports.get_key_value(name),
        (None, Some(number)) => container_ports.iter().find(|(_, n)| **n == number),
        _ => None,
    };
    let (name, number) = found.ok_or(format!("port {target} is no container port"))?;
    if port["port"].as_u64().is_some_and(|p| p != *number) {
        return Err(format!("Service port {} differs from the container port {number} ({name})", port["port"]));
    }
    Ok((name.clone(), *number))
}

fn labels(value: &Value) -> Option<BTreeMap<String, String>> {
    value.as_object().map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
}

/// The keys of kustomization.yaml the check needs (a flat subset of YAML: `key: value` and `- item` lists).
struct Kustomization {
    namespace: String,
    resources: Vec<String>,
    config_map: Option<String>,
    config_files: Vec<String>,
}

impl Kustomization {
    fn parse(text: &str) -> Result<Self, String> {
        let mut k =
            Kustomization { namespace: String::new(), resources: vec![], config_map: None, config_files: vec![] };
        let mut section = "";
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()) {
            let trimmed = line.trim();
            if !line.starts_with(' ') {
                let (key, value) =
                    trimmed.split_once(':').ok_or(format!("kustomization.yaml: cannot read '{line}'"))?;
                section = match key {
                    "resources" => "resources",
                    "configMapGenerator" => "configMapGenerator",
                    _ => "",
                };
                if key == "namespace" {
                    k.namespace = value.trim().to_owned();
                }
            } else if section == "resources" {
                k.resources.push(trimmed.strip_prefix("- ").ok_or(format!("kustomization.yaml: '{line}'"))?.to_owned());
            } else if section == "configMapGenerator" {
                if let Some(name) = trimmed.strip_prefix("- name:") {
                    k.config_map = Some(name.trim().to_owned());
                } else if let Some(file) = trimmed.strip_prefix("- ") {
                    k.config_files.push(file.trim().to_owned());
                }
            }
        }
        if k.namespace.is_empty() {
            return Err("kustomization.yaml names no namespace (the peers' DNS names need it)".into());
        }
        Ok(k)
    }
}

/// The keys of the node config template the check needs, read line by line.
struct NodeConfig {
    node_id: String,
    data_dir: String,
    secret_file: String,
    peers: Vec<String>,
    listen: BTreeMap<String, String>,
}

impl NodeConfig {
    fn parse(text: &str) -> Result<Self, String> {
        let mut config = NodeConfig {
            node_id: String::new(),
            data_dir: String::new(),
            secret_file: String::new(),
            peers: vec![],
            listen: BTreeMap::new(),
        };
        let mut section = String::new();
        let mut in_peers = false;
        for line in text.lines().map(|l| l.split('#').next().unwrap_or_default().trim()).filter(|l| !l.is_empty()) {
            if in_peers {
                in_peers = !line.starts_with(']');
                config.peers.extend(quoted(line));
                continue;
            }
            if line.starts_with('[') {
                section = line.trim_matches(|c| c == '[' || c == ']').to_owned();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("{CONFIG_FILE}: cannot read '{line}'"));
            };
            let (key, value) = (key.trim(), value.trim());
            let string = || quoted(value).into_iter().next().unwrap_or_default();
            match (section.as_str(), key) {
                ("node", "id") => config.node_id = string(),
                ("node", "data_dir") => config.data_dir = string(),
                ("cluster", "secret_file") => config.secret_file = string(),
                ("cluster", "peers") => {
                    config.peers.extend(quoted(value));
                    in_peers = !value.ends_with(']');
                }
                ("listen", _) => {
                    config.listen.insert(key.to_owned(), string());
                }
                _ => {}
            }
        }
        Ok(config)
    }

    fn port(&self, listen: &str) -> Option<u64> {
        self.listen.get(listen)?.rsplit_once(':')?.1.parse().ok()
    }
}

/// The double-quoted strings of a line.
fn quoted(line: &str) -> Vec<String> {
    line.split('"').skip(1).step_by(2).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> (String, Vec<(String, Value)>, String) {
        let dir = crate::util::root().join("dist").join("kubernetes");
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
        let mut docs = Vec::new();
        for name in ["poddisruptionbudget.json", "service-client.json", "service-headless.json", "statefulset.json"] {
            docs.push((name.to_owned(), serde_json::from_str(&read(name)).unwrap()));
        }
        (read("kustomization.yaml"), docs, read(CONFIG_FILE))
    }

    #[test]
    fn the_shipped_manifests_pass() {
        let dir = crate::util::root().join("dist").join("kubernetes");
        let summary = check_dir(&dir).unwrap();
        assert!(summary.starts_with("4 objects, 3 replicas"), "{summary}");
    }

    fn refused(edit: impl FnOnce(&mut String, &mut Vec<(String, Value)>, &mut String), expected: &str) {
        let (mut kust, mut docs, mut config) = shipped();
        edit(&mut kust, &mut docs, &mut config);
        let err = check(&kust, &docs, &config).unwrap_err();
        assert!(err.contains(expected), "{err}");
    }

    fn doc<'a>(docs: &'a mut [(String, Value)], name: &str) -> &'a mut Value {
        &mut docs.iter_mut().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn mismatches_are_refused() {
        refused(
            |_, d, _| doc(d, "service-client.json")["spec"]["selector"]["app.kubernetes.io/name"] = "other".into(),
            "client Service selector",
        );
        refused(|_, d, _| doc(d, "poddisruptionbudget.json")["spec"]["maxUnavailable"] = 2.into(), "maxUnavailable");
        refused(|_, d, _| doc(d, "statefulset.json")["spec"]["replicas"] = 5.into(), "peers are");
        refused(|_, _, c| *c = c.replace("0.0.0.0:8081", "0.0.0.0:9081"), "container port 'app'");
        refused(|_, _, c| *c = c.replace("aether-2.aether.aether.svc", "aether-2.aether.default.svc"), "peers are");
        refused(|_, d, _| doc(d, "statefulset.json")["spec"]["serviceName"] = "nodes".into(), "serviceName");
        refused(
            |_, d, _| {
                doc(d, "statefulset.json")["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
                    ["path"] = "/health/live".into()
            },
            "readinessProbe",
        );
        refused(
            |_, d, _| {
                doc(d, "statefulset.json")["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] = "other".into()
            },
            "volume claim",
        );
        refused(|_, d, _| d.retain(|(n, _)| n != "poddisruptionbudget.json"), "kustomization.yaml lists");
        refused(
            |k, d, _| {
                d.retain(|(n, _)| n != "poddisruptionbudget.json");
                *k = k.replace("  - poddisruptionbudget.json\n", "");
            },
            "exactly one PodDisruptionBudget",
        );
        refused(|k, _, _| *k = k.replace("namespace: aether\n", ""), "namespace");
        refused(
            |_, d, _| {
                doc(d, "statefulset.json")["spec"]["template"]["spec"]["initContainers"][0]["image"] = "busybox".into()
            },
            "init container must run the node's image",
        );
    }
}
