//! Volumes and project data directories: backed up as files straight from
//! their directory on the host (restic reads it; no tar, no helper image),
//! restored by emptying the directory and restoring into it. These are host
//! scripts, not inner ones: Docker keeps a volume's files under its
//! mountpoint, which only the host sees.
//!
//! `stop = true` in config stops the service around the copy
//! (`engines::with_stopped`), for data written in place (SQLite, …).

use crate::transport::script::quote;

/// Prints the directory Docker keeps the volume's files in.
pub fn mountpoint(volume: &str) -> String {
    format!(
        "docker volume inspect -f '{{{{.Mountpoint}}}}' {}",
        quote(volume)
    )
}

/// The mountpoint from `mountpoint`'s output: an absolute path other than `/`.
pub fn parse_mountpoint(stdout: &str) -> Result<String, String> {
    let path = stdout.trim_end_matches(['\n', '\r']);
    if path.starts_with('/') && path != "/" && !path.contains('\n') {
        Ok(path.to_string())
    } else {
        Err(format!("docker gave {path:?} as the volume's mountpoint"))
    }
}

/// Removes everything inside `dir` (hidden files too) but keeps `dir`
/// itself, with its owner and mode, for a restore into it.
pub fn empty_dir(dir: &str) -> Result<String, String> {
    let d = checked_dir(dir)?;
    Ok(format!(
        "[ -d {d} ] || {{ echo \"vpsup: \"{d}\" is not a directory\" >&2; exit 1; }}\nfind {d} -mindepth 1 -maxdepth 1 -exec rm -rf -- {{}} +\n"
    ))
}

/// Prints the number of regular files under `dir` (for a drill's comparison
/// with the snapshot's listing).
pub fn count_files(dir: &str) -> Result<String, String> {
    let d = checked_dir(dir)?;
    Ok(format!("find {d} -type f -printf x | wc -c\n"))
}

pub fn parse_count(stdout: &str) -> Result<u64, String> {
    stdout
        .trim()
        .parse()
        .map_err(|_| format!("not a file count: {stdout:?}"))
}

/// Only absolute paths below `/` are ever emptied or counted.
fn checked_dir(dir: &str) -> Result<String, String> {
    let trimmed = dir.trim_end_matches('/');
    if !dir.starts_with('/') || trimmed.is_empty() || dir.split('/').any(|p| p == "..") {
        return Err(format!(
            "refusing {dir:?}: not an absolute directory below /"
        ));
    }
    Ok(quote(trimmed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::script::testing::sh_ok;

    #[test]
    fn emptying_keeps_the_directory_and_removes_hidden_files_too() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("vol data");
        std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
        std::fs::write(dir.join(".hidden"), "x").unwrap();
        std::fs::write(dir.join("sub/deeper/file"), "x").unwrap();
        std::fs::write(dir.join("-rf"), "x").unwrap();
        std::fs::write(root.path().join("beside"), "x").unwrap();
        let d = dir.display().to_string();
        let out = sh_ok(&format!(
            "{}{}",
            count_files(&d).unwrap(),
            empty_dir(&d).unwrap()
        ));
        assert_eq!(parse_count(&String::from_utf8_lossy(&out.stdout)), Ok(3));
        assert!(dir.is_dir());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert!(root.path().join("beside").exists());
    }

    #[test]
    fn only_absolute_directories_below_root_are_touched() {
        for bad in ["/", "//", "", "data", "./x", "/srv/../"] {
            assert!(empty_dir(bad).is_err(), "{bad}");
            assert!(count_files(bad).is_err(), "{bad}");
        }
        let missing = std::process::Command::new("sh")
            .args(["-c", &empty_dir("/nonexistent/vpsup-test").unwrap()])
            .output()
            .unwrap();
        assert!(!missing.status.success());
    }

    #[test]
    fn the_mountpoint_is_asked_of_docker_and_checked() {
        assert_eq!(
            mountpoint("vpsup-shop_uploads"),
            "docker volume inspect -f '{{.Mountpoint}}' vpsup-shop_uploads"
        );
        assert_eq!(
            parse_mountpoint("/var/lib/docker/volumes/vpsup-shop_uploads/_data\n"),
            Ok("/var/lib/docker/volumes/vpsup-shop_uploads/_data".to_string())
        );
        assert!(parse_mountpoint("\n").is_err());
        assert!(parse_mountpoint("/\n").is_err());
    }
}
