//! The host backs up by itself: per app, a backup timer on `[backup]
//! schedule` and a drill timer on `verify_schedule`, each starting the shared
//! template service (`vpsup-backup@.service`, `vpsup-backup-verify@.service`)
//! with the app as its instance, which runs `vpsup backup [verify] --local
//! --app APP`. Each app has its own timer files, so one app's deploy never
//! changes another's schedule.
//!
//! Deploy keeps them as wanted: the probe hashes the unit files (and the
//! app's backup settings) and reads whether the timers are enabled
//! (`probe_script`), the plan compares that with what `unit_files` renders
//! (`Probed`), and `install_script` writes only what differs, reloads
//! systemd only then, and enables the timers.

use serde_json::json;

use crate::config::BackupConfig;
use crate::engine::render::{Renderer, Vars};
use crate::layout;
use crate::transport::script::{self, quote};
use crate::transport::FileMeta;

const SYSTEMD_DIR: &str = "/etc/systemd/system";

/// One of an app's two scheduled runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    Backup,
    Verify,
}

impl Run {
    /// The template service's name stem: `vpsup-backup`, `vpsup-backup-verify`.
    fn unit_stem(self) -> &'static str {
        match self {
            Run::Backup => layout::BACKUP_UNIT,
            Run::Verify => layout::BACKUP_VERIFY_UNIT,
        }
    }

    /// `vpsup-backup@shop.timer`
    pub fn timer(self, app: &str) -> String {
        format!("{}@{app}.timer", self.unit_stem())
    }

    /// `vpsup-backup@shop.service`: what `systemctl status` shows the last run of.
    pub fn service(self, app: &str) -> String {
        format!("{}@{app}.service", self.unit_stem())
    }

    fn template_service(self) -> String {
        format!("{}@.service", self.unit_stem())
    }

    fn what(self) -> &'static str {
        match self {
            Run::Backup => "backup",
            Run::Verify => "restore drill",
        }
    }

    fn subcommand(self) -> &'static str {
        match self {
            Run::Backup => "",
            Run::Verify => "verify ",
        }
    }

    fn schedule_key(self) -> &'static str {
        match self {
            Run::Backup => "schedule",
            Run::Verify => "verify_schedule",
        }
    }
}

pub const RUNS: [Run; 2] = [Run::Backup, Run::Verify];

/// A unit file as it should be on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    pub path: String,
    pub content: String,
}

impl UnitFile {
    fn sha256(&self) -> String {
        script::sha256_hex(self.content.as_bytes())
    }
}

/// The four unit files of `app`'s schedule on `host` (the host's name feeds
/// the steady time of `daily`/`weekly`).
pub fn unit_files(
    renderer: &Renderer,
    app: &str,
    backup: &BackupConfig,
    host: &str,
) -> Result<Vec<UnitFile>, String> {
    let mut files = Vec::new();
    for run in RUNS {
        let schedule = match run {
            Run::Backup => &backup.schedule,
            Run::Verify => &backup.verify_schedule,
        };
        let mut vars = Vars {
            base: layout::vars(),
            ..Default::default()
        };
        for (name, value) in [
            ("app", json!(app)),
            ("what", json!(run.what())),
            ("subcommand", json!(run.subcommand())),
            ("schedule", json!(schedule.to_string())),
            ("schedule_key", json!(run.schedule_key())),
            (
                "on_calendar",
                json!(schedule.on_calendar(run.what(), app, host)),
            ),
        ] {
            vars.base.insert(name.to_string(), value);
        }
        files.push(UnitFile {
            path: format!("{SYSTEMD_DIR}/{}", run.template_service()),
            content: renderer.template("vpsup_backup.service.tera", &vars)?,
        });
        files.push(UnitFile {
            path: format!("{SYSTEMD_DIR}/{}", run.timer(app)),
            content: renderer.template("vpsup_backup.timer.tera", &vars)?,
        });
    }
    Ok(files)
}

/// Prints `<sha256>  <path>` for each of `app`'s unit files and of `extra`
/// (its settings files) that exists, then `enabled <timer>` for each timer
/// that is enabled and active.
pub fn probe_script(app: &str, extra: &[String]) -> String {
    let mut paths = Vec::new();
    let mut timers = Vec::new();
    for run in RUNS {
        paths.push(quote(&format!("{SYSTEMD_DIR}/{}", run.template_service())));
        paths.push(quote(&format!("{SYSTEMD_DIR}/{}", run.timer(app))));
        timers.push(quote(&run.timer(app)));
    }
    paths.extend(extra.iter().map(|p| quote(p)));
    format!(
        "for f in {paths}; do if [ -f \"$f\" ]; then sha256sum \"$f\"; fi; done\nfor t in {timers}; do systemctl is-enabled --quiet \"$t\" 2>/dev/null && systemctl is-active --quiet \"$t\" 2>/dev/null && echo \"enabled $t\"; done\ntrue",
        paths = paths.join(" "),
        timers = timers.join(" "),
    )
}

/// The line the deploy probe prints once the app's repository id is recorded.
pub const REPOSITORY_RECORDED: &str = "repository-recorded";

/// What `probe_script` printed: the files' hashes and which timers are on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probed {
    hashes: Vec<(String, String)>,
    enabled: Vec<String>,
    /// The app's repository was created and its id recorded.
    pub repository_recorded: bool,
}

impl Probed {
    pub fn parse(text: &str) -> Probed {
        let mut probed = Probed::default();
        for line in text.lines() {
            if let Some(timer) = line.strip_prefix("enabled ") {
                probed.enabled.push(timer.to_string());
            } else if line == REPOSITORY_RECORDED {
                probed.repository_recorded = true;
            } else if let Some((hash, path)) = line.split_once("  ") {
                probed.hashes.push((path.to_string(), hash.to_string()));
            }
        }
        probed
    }

    /// Whether the host holds `content` at `path`.
    pub fn holds(&self, path: &str, content: &[u8]) -> bool {
        let want = script::sha256_hex(content);
        self.hashes.iter().any(|(p, h)| p == path && *h == want)
    }

    /// The files the probe saw directly under `dir` that are not in `keep`
    /// (a channel's secret copy once `[alerts]` no longer names it).
    pub fn others_under(&self, dir: &str, keep: &[&str]) -> Vec<String> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        self.hashes
            .iter()
            .map(|(path, _)| path)
            .filter(|p| {
                p.strip_prefix(&prefix)
                    .is_some_and(|name| !name.contains('/'))
                    && !keep.contains(&p.as_str())
            })
            .cloned()
            .collect()
    }

    /// Both of `app`'s timers are on, with `units` as they should be.
    pub fn timers_current(&self, app: &str, units: &[UnitFile]) -> bool {
        units
            .iter()
            .all(|u| self.holds(&u.path, u.content.as_bytes()))
            && RUNS.iter().all(|r| self.enabled.contains(&r.timer(app)))
    }

    /// Any of `app`'s timers is on (to stop once `[backup]` is gone).
    pub fn any_timer_on(&self, app: &str) -> bool {
        RUNS.iter().any(|r| self.enabled.contains(&r.timer(app)))
    }
}

/// Writes the files that differ (each atomically), reloads systemd when one
/// did, and enables and starts both timers. Prints `changed <path>` per file
/// written.
pub fn install_script(app: &str, files: &[UnitFile]) -> String {
    let meta = FileMeta::mode(0o644);
    let mut out = String::from("set -e\nreload=\n");
    for file in files {
        out.push_str(&format!(
            "if ! printf '%s  %s\\n' {hash} {path} | sha256sum -c --status 2>/dev/null; then\n{write}\nreload=1\necho changed {path}\nfi\n",
            hash = file.sha256(),
            path = quote(&file.path),
            write = script::write_file(&file.path, file.content.as_bytes(), &meta),
        ));
    }
    let timers: Vec<String> = RUNS.iter().map(|r| quote(&r.timer(app))).collect();
    out.push_str(&format!(
        "[ -z \"$reload\" ] || systemctl daemon-reload\nsystemctl enable --now {}\n",
        timers.join(" ")
    ));
    out
}

/// `[backup]` gone from the project: the app's timers stop and their files
/// go (the template services stay for other apps). Its repository and
/// settings stay: they are the user's data.
pub fn remove_script(app: &str) -> String {
    let timers: Vec<String> = RUNS.iter().map(|r| quote(&r.timer(app))).collect();
    let files: Vec<String> = RUNS
        .iter()
        .map(|r| quote(&format!("{SYSTEMD_DIR}/{}", r.timer(app))))
        .collect();
    format!(
        "systemctl disable --now {timers} 2>/dev/null || true\nrm -f {files}\nsystemctl daemon-reload\n",
        timers = timers.join(" "),
        files = files.join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::assets::Assets;
    use crate::transport::script::testing::sh_ok;

    fn config() -> BackupConfig {
        crate::config::Config::parse(
            "[backup]\nrepository = \"/srv/backups/shop\"\n",
            std::path::Path::new("vpsup.toml"),
        )
        .unwrap()
        .backup
        .unwrap()
    }

    fn files(root: &std::path::Path) -> Vec<UnitFile> {
        let assets = Assets::load(None).unwrap();
        let renderer = Renderer::new(&assets.templates).unwrap();
        unit_files(&renderer, "shop", &config(), "vps1")
            .unwrap()
            .into_iter()
            .map(|f| UnitFile {
                path: format!("{}{}", root.display(), f.path),
                ..f
            })
            .collect()
    }

    #[test]
    fn units_run_the_app_on_a_steady_schedule() {
        let files = files(std::path::Path::new(""));
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/systemd/system/vpsup-backup@.service",
                "/etc/systemd/system/vpsup-backup@shop.timer",
                "/etc/systemd/system/vpsup-backup-verify@.service",
                "/etc/systemd/system/vpsup-backup-verify@shop.timer",
            ]
        );
        assert!(files[0]
            .content
            .contains("ExecStart=/usr/local/bin/vpsup backup --local --app %i\n"));
        assert!(files[2]
            .content
            .contains("ExecStart=/usr/local/bin/vpsup backup verify --local --app %i\n"));
        let daily = config().schedule.on_calendar("backup", "shop", "vps1");
        assert!(files[1]
            .content
            .contains(&format!("OnCalendar={daily}\nPersistent=true\n")));
        // The same on every run: a deploy does not move the time.
        assert_eq!(files, self::files(std::path::Path::new("")));
        assert_ne!(
            files[1].content,
            unit_files(
                &Renderer::new(&Assets::load(None).unwrap().templates).unwrap(),
                "shop",
                &config(),
                "vps2"
            )
            .unwrap()[1]
                .content
        );
    }

    #[test]
    fn install_writes_only_what_differs_and_probe_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/systemd/system")).unwrap();
        let files = files(dir.path());
        // No systemctl here: the install script's systemctl lines are cut
        // off (what remains is the file handling under test).
        let install = |files: &[UnitFile]| {
            let script = install_script("shop", files);
            let cut = script.find("[ -z \"$reload\" ]").unwrap();
            String::from_utf8(sh_ok(&script[..cut]).stdout).unwrap()
        };
        let probe = || {
            let script = probe_script("shop", &[]).replace(
                "/etc/systemd/system",
                &format!("{}/etc/systemd/system", dir.path().display()),
            );
            let cut = script.find("for t in").unwrap();
            let mut out = String::from_utf8(sh_ok(&script[..cut]).stdout).unwrap();
            out.push_str(
                "enabled vpsup-backup@shop.timer\nenabled vpsup-backup-verify@shop.timer\n",
            );
            out
        };
        let current = |text: &str| Probed::parse(text).timers_current("shop", &files);
        assert!(!current(&probe()));
        assert_eq!(install(&files).lines().count(), 4);
        assert!(current(&probe()));
        assert_eq!(install(&files), "", "a second install changes nothing");
        let mode = std::fs::metadata(&files[1].path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o644
        );
        std::fs::write(&files[1].path, "edited by hand\n").unwrap();
        assert!(!current(&probe()));
        assert_eq!(install(&files), format!("changed {}\n", files[1].path));
        // A timer that is off is not current either.
        let without_verify = probe().replace("enabled vpsup-backup-verify@shop.timer\n", "");
        assert!(!current(&without_verify));
        assert!(Probed::parse(&without_verify).any_timer_on("shop"));
    }

    /// What the deploy's probe prints for a settings directory (sha256sum of
    /// each file, run for real): the files not wanted any more, and only
    /// those directly in it.
    #[test]
    fn files_the_settings_no_longer_name_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        for name in [
            "shop.toml",
            "shop/ca.pem",
            "shop/smtp-password",
            "shop/sub/x",
        ] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, name).unwrap();
        }
        let out = sh_ok(&format!(
            "for f in '{base}/shop.toml' '{base}/shop'/*; do if [ -f \"$f\" ]; then sha256sum \"$f\"; fi; done"
        ));
        let probed = Probed::parse(&String::from_utf8(out.stdout).unwrap());
        let keep = [format!("{base}/shop.toml"), format!("{base}/shop/ca.pem")];
        let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
        assert_eq!(
            probed.others_under(&format!("{base}/shop"), &keep),
            vec![format!("{base}/shop/smtp-password")]
        );
        assert!(probed.others_under(&format!("{base}/shop/"), &keep).len() == 1);
        let all = [
            format!("{base}/shop.toml"),
            format!("{base}/shop/ca.pem"),
            format!("{base}/shop/smtp-password"),
        ];
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        assert!(probed
            .others_under(&format!("{base}/shop"), &all)
            .is_empty());
    }
}
