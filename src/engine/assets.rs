//! Playbooks and templates: the ones built into the binary, overridden or
//! extended by a project's own `playbooks/` and `templates/` directories
//! (beside vpsup.toml): a project file with the same name wins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// One playbook or template and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// `built-in playbooks/init.yml` or the project file's path, for messages.
    pub origin: String,
    pub text: String,
}

#[derive(Debug, Clone, Default)]
pub struct Assets {
    pub playbooks: BTreeMap<String, Asset>,
    pub templates: BTreeMap<String, Asset>,
}

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "no playbook {name:?}: not a file, and not a built-in or project playbook (known: {known})"
    )]
    UnknownPlaybook { name: String, known: String },
}

impl Assets {
    /// The built-in assets, then the project's from `project_dir`, if given.
    pub fn load(project_dir: Option<&Path>) -> Result<Assets, AssetError> {
        let builtin = |list: &[(&str, &str)], dir: &str| {
            list.iter()
                .map(|(name, text)| {
                    let asset = Asset {
                        origin: format!("built-in {dir}/{name}"),
                        text: text.to_string(),
                    };
                    (name.to_string(), asset)
                })
                .collect::<BTreeMap<_, _>>()
        };
        let mut assets = Assets {
            playbooks: builtin(embedded::PLAYBOOKS, "playbooks"),
            templates: builtin(embedded::TEMPLATES, "templates"),
        };
        if let Some(dir) = project_dir {
            overlay(&mut assets.playbooks, &dir.join("playbooks"), "yml")?;
            overlay(&mut assets.templates, &dir.join("templates"), "tera")?;
        }
        Ok(assets)
    }

    /// A playbook by built-in/project name (`init` or `init.yml`) or by path.
    pub fn playbook(&self, name: &str) -> Result<Asset, AssetError> {
        let file_name = if name.ends_with(".yml") {
            name.to_string()
        } else {
            format!("{name}.yml")
        };
        if let Some(asset) = self.playbooks.get(&file_name) {
            return Ok(asset.clone());
        }
        let path = Path::new(name);
        if path.is_file() {
            return read(path).map(|text| Asset {
                origin: path.display().to_string(),
                text,
            });
        }
        Err(AssetError::UnknownPlaybook {
            name: name.to_string(),
            known: self
                .playbooks
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

fn overlay(
    into: &mut BTreeMap<String, Asset>,
    dir: &Path,
    extension: &str,
) -> Result<(), AssetError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // no such directory: nothing to override
    };
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        if path.extension().is_some_and(|e| e == extension) && path.is_file() {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let text = read(&path)?;
            into.insert(
                name,
                Asset {
                    origin: path.display().to_string(),
                    text,
                },
            );
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, AssetError> {
    std::fs::read_to_string(path).map_err(|cause| AssetError::Read {
        path: path.to_path_buf(),
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_files_override_and_extend_the_built_in_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
        std::fs::write(dir.path().join("templates/extra.tera"), "x").unwrap();
        std::fs::write(dir.path().join("templates/notes.txt"), "ignored").unwrap();
        std::fs::write(dir.path().join("playbooks/site.yml"), "[]").unwrap();
        let assets = Assets::load(Some(dir.path())).unwrap();
        assert_eq!(assets.templates["extra.tera"].text, "x");
        assert!(assets.templates["extra.tera"]
            .origin
            .ends_with("templates/extra.tera"));
        assert!(!assets.templates.contains_key("notes.txt"));
        assert_eq!(assets.playbook("site").unwrap().text, "[]");
        assert_eq!(assets.playbook("site.yml").unwrap().text, "[]");
        let err = assets.playbook("nope").unwrap_err().to_string();
        assert!(
            err.contains("no playbook \"nope\"") && err.contains("site.yml"),
            "{err}"
        );
    }

    #[test]
    fn a_path_works_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine.yml");
        std::fs::write(&path, "[]").unwrap();
        let asset = Assets::load(None)
            .unwrap()
            .playbook(path.to_str().unwrap())
            .unwrap();
        assert_eq!(asset.origin, path.display().to_string());
    }
}
