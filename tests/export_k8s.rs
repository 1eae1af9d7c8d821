//! `vpsup export k8s` end to end, without a host: the tree for the README's
//! example app and for the VM test stack matches its golden copy byte for
//! byte (VPSUP_BLESS=1 rewrites them), `kubectl kustomize` builds the
//! production overlay, and every object it yields validates offline against
//! the Kubernetes OpenAPI schemas (kubernetes-validate --strict). The tools
//! come from PyPI into a venv under /var/cache/vpsup-test (tests/setup).

use std::path::{Path, PathBuf};
use std::process::Command;

const TOOLS: &str = "/var/cache/vpsup-test/k8s-tools-1.37.1-1.37.0/venv";
/// The version the README states (export::k8s::KUBERNETES_VERSION).
const VALIDATE_AGAINST: &str = "1.31.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies `source` into a temp project with `config` as its vpsup.toml, and exports it.
fn export(source: &Path, config: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", source.display()))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::copy(config, dir.path().join("vpsup.toml")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vpsup"))
        .args(["export", "k8s", "--out", "k8s"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = dir.path().join("k8s");
    (dir, tree)
}

fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

fn matches_golden(tree: &Path, name: &str) {
    let golden = root().join("tests/golden/export").join(name);
    if std::env::var_os("VPSUP_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&golden);
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        let status = Command::new("cp")
            .arg("-a")
            .arg(tree)
            .arg(&golden)
            .status()
            .unwrap();
        assert!(status.success());
        return;
    }
    assert!(
        golden.is_dir(),
        "no golden tree {}: run with VPSUP_BLESS=1 and review it",
        golden.display()
    );
    assert_eq!(files(tree), files(&golden), "the files of {name}");
    for f in files(tree) {
        assert_eq!(
            std::fs::read_to_string(tree.join(&f)).unwrap(),
            std::fs::read_to_string(golden.join(&f)).unwrap(),
            "{name}/{f} differs from the golden copy (VPSUP_BLESS=1 to rewrite)"
        );
    }
}

/// `kubectl kustomize` of the overlay, then kubernetes-validate on every object.
fn builds_and_validates(tree: &Path) {
    let tools = Path::new(TOOLS);
    assert!(
        tools.join("bin/kubectl").exists(),
        "{TOOLS} is missing: run tests/setup"
    );
    let built = Command::new(tools.join("bin/kubectl"))
        .args(["kustomize", "overlays/production"])
        .current_dir(tree)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "kustomize: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let out_dir = tempfile::tempdir().unwrap();
    let all = out_dir.path().join("all.yaml");
    std::fs::write(&all, &built.stdout).unwrap();
    let text = String::from_utf8_lossy(&built.stdout).into_owned();
    let kinds = text.lines().filter(|l| l.starts_with("kind: ")).count();
    assert!(kinds >= 6, "{text}");
    let validated = Command::new(tools.join("bin/python"))
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "-k",
            VALIDATE_AGAINST,
        ])
        .arg(&all)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&validated.stdout).into_owned()
        + &String::from_utf8_lossy(&validated.stderr);
    assert!(
        validated.status.success(),
        "kubernetes-validate:\n{said}\n{text}"
    );
    assert_eq!(
        said.matches(" passed for resource ").count(),
        kinds,
        "{said}"
    );
}

#[test]
fn the_readme_example_exports_a_tree_that_builds_and_validates() {
    let project = root().join("tests/export/readme-app");
    let (_dir, tree) = export(&project, &project.join("vpsup.toml"));
    matches_golden(&tree, "readme-app");
    builds_and_validates(&tree);
}

#[test]
fn the_vm_stack_exports_a_tree_that_builds_and_validates() {
    let (_dir, tree) = export(
        &root().join("tests/vm/stack"),
        &root().join("tests/export/vm-stack.toml"),
    );
    matches_golden(&tree, "vm-stack");
    builds_and_validates(&tree);
}
