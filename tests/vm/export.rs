//! The export stage of the VM tests, once the shop stack is deployed:
//! `vpsup export k8s --host` against the deployed shop stack reads the real
//! size of the db's named volume and the generated secret's name.

use std::path::Path;

use crate::support::*;

pub fn export_reads_the_deployed_stack(_vm: &TestVm, op: &Operator, _key: &Path) {
    let host = std::fs::read_to_string(op.project.path().join("vpsup.toml"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("[hosts.")
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_string)
        })
        .expect("init recorded the VM in vpsup.toml");
    let out = op.vpsup(&["export", "k8s", "--out", "k8s-measured", "--host", &host]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let tree = op.project.path().join("k8s-measured");
    let readme = std::fs::read_to_string(tree.join("README.md")).unwrap();
    // Measured, not guessed: the db's volume and data path say their size.
    assert!(readme.contains("measured on host"), "{readme}");
    assert!(
        readme.contains("(dbdata):") && readme.contains("MiB on the host now"),
        "{readme}"
    );
    assert!(!readme.contains("not measured"), "{readme}");
    let db = std::fs::read_to_string(tree.join("base/db-statefulset.yaml")).unwrap();
    assert!(db.contains("storage: 1Gi"), "{db}");
    // The generated secret is a name in a Secret, its value nowhere.
    let generated = std::fs::read_to_string(tree.join("base/secrets/generated.env")).unwrap();
    assert!(generated.contains("DB_PASSWORD="), "{generated}");
    let backend = std::fs::read_to_string(tree.join("base/backend-deployment.yaml")).unwrap();
    assert!(
        backend.contains("key: DB_PASSWORD") && backend.contains("name: shop-generated"),
        "{backend}"
    );
    let resources =
        std::fs::read_to_string(tree.join("overlays/production/resources.yaml")).unwrap();
    assert!(resources.contains("requests:"), "{resources}");
}
