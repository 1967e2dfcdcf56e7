//! `cargo xtask k8s`: the Kubernetes manifests validate (`kubernetes-validate
//! --strict`, installed from PyPI when missing), `make-secrets.sh` makes
//! Secrets that validate too, and the ConfigMap's config with those Secrets
//! starts a node that serves TLS and checks tokens.

use std::path::Path;
use std::process::Command;

use crate::node::{self, Failure, Node};

/// The manifests `kubernetes-validate` checks (the ServiceMonitor is a CRD it
/// has no schema for; the kustomization is not a resource).
const MANIFESTS: &[&str] = &["configmap.yaml", "services.yaml", "statefulset.yaml", "pdb.yaml"];

pub(crate) fn k8s() -> Result<(), Failure> {
    let validate = validator()?;
    let bin = node::build_release()?;
    let dir = node::workspace().join("deploy").join("kubernetes");
    let tmp = node::target().join("k8s-check");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Failure::new(format!("{}: {e}", tmp.display())))?;
    let pki = tmp.join("pki");
    let secrets = Command::new("sh")
        .arg(dir.join("make-secrets.sh"))
        .args(["3", "overlay"])
        .arg(&pki)
        .env("SVC_OVERLAY", &bin)
        .output()
        .map_err(|e| Failure::new(format!("make-secrets.sh: {e}")))?;
    if !secrets.status.success() {
        return Err(Failure::new(format!("make-secrets.sh: {}", String::from_utf8_lossy(&secrets.stderr))));
    }
    let secrets_yaml = tmp.join("secrets.yaml");
    write(&secrets_yaml, &String::from_utf8_lossy(&secrets.stdout))?;

    let mut files: Vec<_> = MANIFESTS.iter().map(|f| dir.join(f)).collect();
    files.push(secrets_yaml);
    let out = Command::new(&validate)
        .args(["--strict", "--quiet"])
        .args(&files)
        .output()
        .map_err(|e| Failure::new(format!("kubernetes-validate: {e}")))?;
    if !out.status.success() {
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        return Err(Failure::new(format!("kubernetes-validate --strict failed:\n{said}")));
    }
    eprintln!("k8s: {} manifests and make-secrets.sh's Secrets validate (--strict)", MANIFESTS.len());

    // The ConfigMap's overlay.toml, with what the StatefulSet adds per pod
    // (files at their places here instead of under /etc/overlay).
    let configmap = read(&dir.join("configmap.yaml"))?;
    let toml =
        embedded(&configmap, "overlay.toml: |").ok_or_else(|| Failure::new("no overlay.toml in the ConfigMap"))?;
    let toml = toml.replace("/etc/overlay/tls/", &format!("{}/", pki.display()));
    let toml = toml.replace("/etc/overlay/auth/", &format!("{}/", pki.display()));
    let config = tmp.join("overlay.toml");
    write(&config, &toml)?;
    let cert = format!("tls.cert={}", pki.join("svc-overlay-0.pem").display());
    let key = format!("tls.key={}", pki.join("svc-overlay-0.key").display());
    let node = Node::start(&bin, "k8s-check", &["--config", &config.to_string_lossy(), "--set", &cert, "--set", &key])?;
    let healthy = node::http_get(node.admin(), "/healthz").is_some_and(|(status, _)| status == 200);
    node.expect(healthy, "/healthz of a node on the ConfigMap's config")?;
    // Not joined (the seed name resolves only inside the cluster), and it
    // says which gate waits.
    let ready = node::http_get(node.admin(), "/readyz").unwrap_or_default();
    node.expect(ready.0 == 503 && ready.1.contains("joined"), &format!("/readyz without peers: {ready:?}"))?;
    eprintln!("k8s: the ConfigMap's config with make-secrets.sh's files starts a TLS node (joined waits for peers)");
    Ok(())
}

/// The block under `key` in a YAML file (a literal block, indented).
fn embedded(yaml: &str, key: &str) -> Option<String> {
    let mut lines = yaml.lines().skip_while(|l| !l.trim_end().ends_with(key));
    let head = lines.next()?;
    let indent = head.len() - head.trim_start().len() + 2;
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect();
    Some(body.join("\n") + "\n")
}

/// `kubernetes-validate`, installed with pip when missing.
fn validator() -> Result<String, Failure> {
    let found = |c: &str| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success());
    if found("kubernetes-validate") {
        return Ok("kubernetes-validate".into());
    }
    eprintln!("k8s: installing kubernetes-validate (PyPI)");
    let installed = Command::new("python3")
        .args(["-m", "pip", "install", "-q", "kubernetes-validate"])
        .status()
        .is_ok_and(|s| s.success());
    if installed && found("kubernetes-validate") {
        return Ok("kubernetes-validate".into());
    }
    Err(Failure::new("kubernetes-validate is not installed and `python3 -m pip install kubernetes-validate` failed"))
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::new(format!("{}: {e}", path.display())))
}

fn write(path: &Path, text: &str) -> Result<(), Failure> {
    std::fs::write(path, text).map_err(|e| Failure::new(format!("{}: {e}", path.display())))
}
