//! Getting a release onto the host with as little as possible on the wire.
//! The deploy probe lists the current release's files with their SHA-256
//! (`probe_script`, folded into the one probe exec); `plan` compares them with
//! the files of the new release; `release_script` makes the new release
//! directory from the current one (a local copy on the host) and writes only
//! the files that changed, in one exec, content on stdin.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::volumes;
use crate::transport::script::{self, quote};
use crate::transport::FileMeta;

/// A file of the release, by its path inside the release directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFile {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

impl ReleaseFile {
    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.content))
    }
}

/// What the host has: the current release's id and its files' hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    pub release: Option<String>,
    pub files: BTreeMap<String, String>,
}

/// Prints `current ID` and `file SHA256 PATH` lines for the release that
/// `APP_DIR/current` points at (nothing when there is none).
pub fn probe_script(app_dir: &str) -> String {
    format!(
        r#"if [ -L {dir}/current ]; then
  echo "current $(basename "$(readlink {dir}/current)")"
  (cd {dir}/current && find . -type f -exec sha256sum {{}} + | sed 's|  \./| |; s|^|file |')
fi"#,
        dir = quote(app_dir)
    )
}

/// Reads what `probe_script` printed.
pub fn parse_probe(text: &str) -> Current {
    let mut current = Current::default();
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("current ") {
            current.release = Some(id.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("file ") {
            if let Some((hash, path)) = rest.split_once(' ') {
                // sha256sum marks a name holding a backslash or newline with
                // a leading `\` and escapes those characters.
                let (hash, path) = match hash.strip_prefix('\\') {
                    Some(hash) => (hash, unescape_sha256sum(path)),
                    None => (hash, path.to_string()),
                };
                current.files.insert(path, hash.to_string());
            }
        }
    }
    current
}

/// `\\` and `\n` in a name as sha256sum prints it.
fn unescape_sha256sum(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// What a new release changes compared with the current one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan<'a> {
    pub upload: Vec<&'a ReleaseFile>,
    pub unchanged: Vec<&'a ReleaseFile>,
    /// In the current release, not in the new one.
    pub removed: Vec<String>,
}

impl Plan<'_> {
    /// Nothing to upload and nothing gone: the release would equal the current one.
    pub fn is_noop(&self) -> bool {
        self.upload.is_empty() && self.removed.is_empty()
    }
}

/// `data`: the app's data paths (`deploy::volumes`). What an older release
/// holds there was written by containers: it is neither compared nor
/// removed (the new release is a copy, and a removal there could reach the
/// data itself).
pub fn plan<'a>(files: &'a [ReleaseFile], current: &Current, data: &[String]) -> Plan<'a> {
    let mut plan = Plan::default();
    for file in files {
        if current.files.get(&file.path) == Some(&file.sha256()) {
            plan.unchanged.push(file);
        } else {
            plan.upload.push(file);
        }
    }
    plan.removed = current
        .files
        .keys()
        .filter(|p| !files.iter().any(|f| &f.path == *p) && !volumes::in_data(p, data))
        .cloned()
        .collect();
    plan
}

/// Makes `APP_DIR/releases/ID` from the current release (copied on the host)
/// with the plan's uploads written and removals applied. Carries file
/// content: send it on stdin (`ExecRequest::piped`).
pub fn release_script(app_dir: &str, id: &str, plan: &Plan) -> String {
    let new = format!("{app_dir}/releases/{id}");
    // The copy drops symlinks (the only ones a release holds point into the
    // app's data, left by moving an older release's data out: a file
    // written through one would land in the data) and opens directories an
    // earlier vpsup made 0700 to a container's non-root user.
    let mut script = format!(
        "set -e\numask 022\nmkdir -p {releases}\nrm -rf {new}\nmkdir {new}\n\
         if [ -L {dir}/current ]; then\n  cp -a {dir}/current/. {new}/\n  \
         find {new} -type l -exec rm -f -- {{}} +\n  find {new} -type d -exec chmod 0755 -- {{}} +\nfi\n",
        dir = quote(app_dir),
        releases = quote(&format!("{app_dir}/releases")),
        new = quote(&new),
    );
    // Unchanged files keep their content, and get their mode (an env file
    // an earlier vpsup left 0644 is 0600 now).
    let mut by_mode: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for file in &plan.unchanged {
        by_mode
            .entry(file.mode)
            .or_default()
            .push(quote(&format!("{new}/{}", file.path)));
    }
    for (mode, paths) in by_mode {
        for chunk in paths.chunks(100) {
            script.push_str(&format!("chmod {mode:04o} -- {}\n", chunk.join(" ")));
        }
    }
    for path in &plan.removed {
        script.push_str(&format!("rm -f {}\n", quote(&format!("{new}/{path}"))));
    }
    for file in &plan.upload {
        let dest = format!("{new}/{}", file.path);
        if let Some((dir, _)) = dest.rsplit_once('/') {
            script.push_str(&format!("mkdir -p {}\n", quote(dir)));
        }
        script.push_str(&script::write_file(
            &dest,
            &file.content,
            &FileMeta::mode(file.mode),
        ));
    }
    script
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{ExecRequest, LocalTransport, Transport};

    fn file(path: &str, content: &str) -> ReleaseFile {
        ReleaseFile {
            path: path.into(),
            content: content.as_bytes().to_vec(),
            mode: 0o600,
        }
    }

    async fn deploy(
        t: &LocalTransport,
        app: &str,
        id: &str,
        files: &[ReleaseFile],
    ) -> (usize, usize) {
        let out = t
            .run_ok("probe", ExecRequest::new(probe_script(app)))
            .await
            .unwrap();
        let current = parse_probe(&out.stdout_str());
        let plan = plan(files, &current, &[]);
        let counts = (plan.upload.len(), plan.removed.len());
        t.run_ok(
            "release",
            ExecRequest::piped(release_script(app, id, &plan)),
        )
        .await
        .unwrap();
        let link = format!("{app}/current");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("releases/{id}"), &link).unwrap();
        counts
    }

    #[tokio::test]
    async fn only_changed_files_travel_and_removed_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("doctor").display().to_string();
        let t = LocalTransport::new("test", true);
        let v1 = [
            file("compose.yml", "services: {}\n"),
            file("env/.env.production", "A=1\n"),
        ];
        assert_eq!(deploy(&t, &app, "r1", &v1).await, (2, 0));

        // Unchanged: nothing to upload.
        let out = t
            .run_ok("probe", ExecRequest::new(probe_script(&app)))
            .await
            .unwrap();
        let current = parse_probe(&out.stdout_str());
        assert_eq!(current.release.as_deref(), Some("r1"));
        assert_eq!(current.files.len(), 2);
        assert!(plan(&v1, &current, &[]).is_noop());

        // One file changed, one new, one gone: only two travel.
        let v2 = [
            file("compose.yml", "services: {web: {}}\n"),
            file("extra.conf", "x\n"),
        ];
        assert_eq!(deploy(&t, &app, "r2", &v2).await, (2, 1));
        let r2 = std::path::Path::new(&app).join("releases/r2");
        assert_eq!(
            std::fs::read_to_string(r2.join("compose.yml")).unwrap(),
            "services: {web: {}}\n"
        );
        assert!(!r2.join("env/.env.production").exists());
        // The previous release is untouched (rollback needs it).
        let r1 = std::path::Path::new(&app).join("releases/r1");
        assert_eq!(
            std::fs::read_to_string(r1.join("env/.env.production")).unwrap(),
            "A=1\n"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(r2.join("extra.conf"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    /// A name with a backslash reads back as itself (sha256sum escapes it),
    /// so an unchanged project is a no-op; directories are readable by a
    /// container's non-root user (0755, not 0700); what containers wrote
    /// into a data path of an older release is never "removed".
    #[tokio::test]
    async fn odd_names_converge_modes_stay_open_and_data_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("doctor").display().to_string();
        let t = LocalTransport::new("test", true);
        let v1 = [
            file("config/a\\b.conf", "x\n"),
            file("initdb/01.sql", "create table t();\n"),
        ];
        deploy(&t, &app, "r1", &v1).await;
        let r1 = std::path::Path::new(&app).join("releases/r1");
        std::fs::create_dir_all(r1.join("data")).unwrap();
        std::fs::write(r1.join("data/PG_VERSION"), "16").unwrap();
        let out = t
            .run_ok("probe", ExecRequest::new(probe_script(&app)))
            .await
            .unwrap();
        let current = parse_probe(&out.stdout_str());
        assert!(
            current.files.contains_key("config/a\\b.conf"),
            "{current:?}"
        );
        let next = plan(&v1, &current, &["data".to_string()]);
        assert!(next.is_noop(), "{next:?}");
        assert_eq!(plan(&v1, &current, &[]).removed, ["data/PG_VERSION"]);
        use std::os::unix::fs::PermissionsExt;
        for d in ["", "initdb", "config"] {
            let mode = std::fs::metadata(r1.join(d)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o755, "{d}");
        }

        // A release an earlier vpsup left 0700, holding the link its data
        // moved out through: the next release opens the directories, takes
        // each file's mode, and has no link (a file written through it would
        // land in the data).
        let data = dir.path().join("data/state");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("db"), "WRITTEN BY THE APP").unwrap();
        std::os::unix::fs::symlink(&data, r1.join("state")).unwrap();
        std::fs::set_permissions(r1.join("config"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::set_permissions(
            r1.join("initdb/01.sql"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let v2 = [
            file("config/a\\b.conf", "x\n"),
            file("initdb/01.sql", "create table t();\n"),
            file("state/db", "project default\n"),
        ];
        deploy(&t, &app, "r2", &v2).await;
        let r2 = std::path::Path::new(&app).join("releases/r2");
        assert_eq!(
            std::fs::read_to_string(data.join("db")).unwrap(),
            "WRITTEN BY THE APP"
        );
        assert!(!std::fs::symlink_metadata(r2.join("state"))
            .unwrap()
            .is_symlink());
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&r2.join("config")), 0o755);
        assert_eq!(mode(&r2.join("initdb/01.sql")), 0o600);
        assert!(std::fs::symlink_metadata(r1.join("state"))
            .unwrap()
            .is_symlink());
    }

    #[test]
    fn an_unchanged_file_is_not_in_the_script() {
        let files = [file("compose.yml", "same\n"), file("app.env", "NEW\n")];
        let current = Current {
            release: Some("r1".into()),
            files: BTreeMap::from([("compose.yml".to_string(), files[0].sha256())]),
        };
        let p = plan(&files, &current, &[]);
        assert_eq!(p.unchanged.len(), 1);
        let script = release_script("/srv/vpsup/doctor", "r2", &p);
        assert!(
            script.contains("dest=/srv/vpsup/doctor/releases/r2/app.env")
                && !script.contains("dest=/srv/vpsup/doctor/releases/r2/compose.yml"),
            "{script}"
        );
    }
}
