//! The state file: what the last run found and told, and what the checks
//! remember (`checks::Memory`). Written whole to a temporary file beside it
//! and renamed over it, so a reader (or a run cut off mid-write) sees the
//! old file or the new one, never half of one.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::alerting::Alerting;
use super::checks::Memory;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// When the run that wrote it finished checking.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub checked: Option<OffsetDateTime>,
    #[serde(flatten)]
    pub alerting: Alerting,
    #[serde(default)]
    pub memory: Memory,
}

impl State {
    /// The state at `path`: a missing file is a first run; one that does
    /// not read is started over, with why (said by the caller).
    pub fn load(path: &Path) -> (State, Option<String>) {
        match std::fs::read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (State::default(), None),
            Err(e) => (State::default(), Some(format!("{}: {e}", path.display()))),
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(state) => (state, None),
                Err(e) => (
                    State::default(),
                    Some(format!("{}: {e}; starting over", path.display())),
                ),
            },
        }
    }

    /// The newer (by `checked`) of the states at `path` and `fallback` (where
    /// `save_or_fallback` put it while `path` could not be written).
    pub fn load_either(path: &Path, fallback: &Path) -> (State, Vec<String>) {
        let (main, main_error) = State::load(path);
        let (kept, kept_error) = State::load(fallback);
        let errors = main_error.into_iter().chain(kept_error).collect();
        if kept.checked > main.checked {
            (kept, errors)
        } else {
            (main, errors)
        }
    }

    /// Saves at `path`, and removes the copy at `fallback`; when `path`
    /// cannot be written (a full disk), saves at `fallback` instead, so the
    /// next run neither tells again what this one told nor forgets a
    /// delivery owed. `Err`: why `path` was not written (and, if so,
    /// `fallback` neither).
    pub fn save_or_fallback(&self, path: &Path, fallback: &Path) -> Result<(), String> {
        match self.save(path) {
            Ok(()) => {
                let _ = std::fs::remove_file(fallback);
                Ok(())
            }
            Err(e) => {
                let why = format!("cannot write the state file {}: {e}", path.display());
                match self.save(fallback) {
                    Ok(()) => Err(format!("{why}; kept in {} meanwhile", fallback.display())),
                    Err(e2) => Err(format!("{why}, nor {}: {e2}", fallback.display())),
                }
            }
        }
    }

    /// Replaces the file at `path` atomically (its directory is created, 0700).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let name = path
            .file_name()
            .map_or("state".into(), |n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(self)?)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::alerting::Open;

    #[test]
    fn saved_and_loaded_whole_and_a_broken_file_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watch/shop.json");
        assert_eq!(State::load(&path), (State::default(), None));
        let mut state = State {
            checked: Some(OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()),
            ..State::default()
        };
        state.alerting.open.insert(
            "disk:/".into(),
            Open {
                check: "disk /".into(),
                text: "93% used".into(),
                since: OffsetDateTime::from_unix_timestamp(1_799_000_000).unwrap(),
                told: [("email".to_string(), 1_799_000_000)].into(),
            },
        );
        state.memory.restarts.insert("vpsup-shop-web-1".into(), 3);
        state.save(&path).unwrap();
        assert_eq!(State::load(&path), (state.clone(), None));
        // Nothing else is left in the directory (no temporary file).
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        std::fs::write(&path, "{\"open\": ").unwrap();
        let (fresh, why) = State::load(&path);
        assert_eq!(fresh, State::default());
        assert!(why.unwrap().ends_with("; starting over"));
    }
}
