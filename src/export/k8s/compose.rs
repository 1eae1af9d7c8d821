//! The compose model the export reads, as compose resolves it for what the
//! export needs: the project's compose files merged in order, each file's
//! `include:` loaded first, and `extends:` applied (a service's own keys win
//! over its base's). Interpolation is not done here: a `${VAR}` may name a
//! secret, whose value must never reach a manifest (see `env`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::backup::plan::merge_compose;
use crate::deploy::compose_model;

/// Reads `files` (relative to `project`, or absolute) into one document.
pub fn load(project: &Path, files: &[PathBuf]) -> Result<Value, String> {
    let mut docs = Vec::new();
    let mut seen = BTreeSet::new();
    for file in files {
        read_with_includes(&project.join(file), &mut docs, &mut seen)?;
    }
    let mut merged = merge_compose(&docs);
    apply_extends(&mut merged, project)?;
    Ok(merged)
}

fn parse(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: Value =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if !doc.is_object() {
        return Err(format!(
            "{}: expected a mapping (services: ...) at the top",
            path.display()
        ));
    }
    Ok(doc)
}

/// A file's `include:`s (each before the file that includes it, as compose
/// loads them), then the file itself.
fn read_with_includes(
    path: &Path,
    docs: &mut Vec<Value>,
    seen: &mut BTreeSet<PathBuf>,
) -> Result<(), String> {
    if !seen.insert(path.to_path_buf()) {
        return Ok(());
    }
    let mut doc = parse(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let includes =
        compose_model::include_paths(&doc).map_err(|e| format!("{}: {e}", path.display()))?;
    for include in includes {
        read_with_includes(&dir.join(include), docs, seen)?;
    }
    if let Some(top) = doc.as_object_mut() {
        top.remove("include");
    }
    docs.push(doc);
    Ok(())
}

/// `extends: { service, file? }`: the base's keys under the service's own.
fn apply_extends(doc: &mut Value, project: &Path) -> Result<(), String> {
    let Some(services) = doc.get("services").and_then(Value::as_object).cloned() else {
        return Ok(());
    };
    let mut resolved = Map::new();
    for (name, definition) in &services {
        resolved.insert(
            name.clone(),
            extended(name, definition, &services, project, 0)?,
        );
    }
    doc["services"] = Value::Object(resolved);
    Ok(())
}

fn extended(
    name: &str,
    definition: &Value,
    services: &Map<String, Value>,
    project: &Path,
    depth: usize,
) -> Result<Value, String> {
    let Some(extends) = definition.get("extends") else {
        return Ok(definition.clone());
    };
    if depth > 10 {
        return Err(format!("service {name}: `extends` goes round in a circle"));
    }
    let (base_name, file) = match extends {
        Value::String(s) => (s.clone(), None),
        other => (
            other
                .get("service")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("service {name}: `extends` names no service"))?
                .to_string(),
            other.get("file").and_then(Value::as_str),
        ),
    };
    let base = match file {
        Some(file) => {
            let other = parse(&project.join(file))?;
            let other_services = other
                .get("services")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let base = other_services
                .get(&base_name)
                .ok_or_else(|| format!("service {name}: no service {base_name} in {file}"))?;
            extended(&base_name, base, &other_services, project, depth + 1)?
        }
        None => {
            let base = services
                .get(&base_name)
                .ok_or_else(|| format!("service {name}: extends unknown service {base_name}"))?;
            extended(&base_name, base, services, project, depth + 1)?
        }
    };
    let mut out = base.as_object().cloned().unwrap_or_default();
    for (k, v) in definition.as_object().into_iter().flatten() {
        if k != "extends" {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_and_extends_are_resolved() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("compose.yml"),
            "include: [db.yml]\nservices:\n  api:\n    extends: { service: base, file: common.yml }\n    environment: { A: '1' }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("db.yml"),
            "services:\n  db:\n    image: postgres:16\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("common.yml"),
            "services:\n  base:\n    image: shop-api\n    environment: { B: '2' }\n",
        )
        .unwrap();
        let doc = load(dir.path(), &[PathBuf::from("compose.yml")]).unwrap();
        assert_eq!(doc["services"]["db"]["image"], "postgres:16");
        assert_eq!(doc["services"]["api"]["image"], "shop-api");
        // The service's own `environment` replaces its base's, as written.
        assert_eq!(doc["services"]["api"]["environment"]["A"], "1");
        assert!(doc.get("include").is_none());
    }
}
