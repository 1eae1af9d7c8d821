//! One fact-gathering exec per run (`scripts/watch_gather.sh`) and its
//! parser: what the host looks like now, as plain data, judged elsewhere
//! (`checks`). A part whose tool is missing reads as "not looked at", never
//! as a problem of its own.

use std::path::Path;

use time::OffsetDateTime;

use super::host_settings::WatchSettings;
use crate::acme::certinfo::CertInfo;
use crate::backup::status::{self as backup_status, AppBackups};
use crate::deploy::switch::Slot;
use crate::layout::RENEW_SERVICE;
use crate::scripts::WATCH_GATHER;
use crate::transport::script::quote;
use crate::transport::sections::{Parts, Sections};

/// The gather script for every app in `apps`, its parts marked by
/// `sections`; Docker's slow answers are kept in `docker_cache` for an hour.
pub fn script(sections: &Sections, apps: &[WatchSettings], docker_cache: &Path) -> String {
    let sites: Vec<String> = apps
        .iter()
        .flat_map(|app| {
            let (nginx_host, nginx_port) = app.nginx_address();
            app.sites.iter().flat_map(move |s| {
                [&app.app, &s.name, &s.health, nginx_host, nginx_port].map(quote)
            })
        })
        .collect();
    let projects: Vec<String> = apps
        .iter()
        .filter_map(|app| {
            let project = app.project.as_deref()?;
            let slot_project = |slot: Slot| slot.project(&app.app);
            Some(
                [
                    app.app.clone(),
                    project.to_string(),
                    app.app_paths().serving_file(),
                    slot_project(Slot::Blue),
                    slot_project(Slot::Green),
                ]
                .map(|v| quote(&v))
                .join(" "),
            )
        })
        .collect();
    WATCH_GATHER.fill(&[
        ("marker", sections.marker()),
        ("sites", &sites.join(" ")),
        ("projects", &projects.join(" ")),
        ("docker_cache", &quote(&docker_cache.to_string_lossy())),
        ("renew_service", RENEW_SERVICE),
        ("backups", &backup_status::script(sections.marker())),
    ])
}

/// What one site answered through nginx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteFacts {
    pub name: String,
    pub health: String,
    /// The HTTP status of the health path, or why there was none.
    pub answer: Result<u16, String>,
    /// The certificate nginx serves for the name (`None`: no TLS answer).
    pub certificate: Option<Result<CertInfo, String>>,
}

/// One of the app's containers, as `docker inspect` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFacts {
    pub service: String,
    pub name: String,
    /// `running`, `exited`, `restarting`, `dead`, `created`, `paused`.
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or `None` without a healthcheck.
    pub health: Option<String>,
    pub restarts: u64,
    pub exit_code: i64,
    /// When it last started (`None`: never, or Docker did not say).
    pub started: Option<OffsetDateTime>,
}

/// A filesystem `df` reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFacts {
    /// Where it is mounted (the key it is remembered by).
    pub mount: String,
    pub size: u64,
    pub used: u64,
    pub available: u64,
}

impl DiskFacts {
    /// Percent used, as `df` counts it (of what non-root users may fill).
    pub fn percent(&self) -> u32 {
        let usable = self.used + self.available;
        if usable == 0 {
            return 0;
        }
        (self.used * 100).div_ceil(usable) as u32
    }
}

/// Everything one run saw.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Facts {
    pub sites: Vec<SiteFacts>,
    /// `None`: not looked at (no compose project); `Err`: Docker did not answer.
    pub containers: Option<Result<Vec<ContainerFacts>, String>>,
    pub disks: Vec<DiskFacts>,
    /// Docker's build cache, in bytes (`None`: not looked at).
    pub build_cache: Option<u64>,
    /// The renewal service's last result when it failed (`exit-code`, ...).
    pub renewal_failed: Option<String>,
    /// Packages that asked for a reboot (`Some(vec![])`: a reboot, no list).
    pub reboot: Option<Vec<String>>,
    /// The kernel's boot id and its OOM kill count since boot.
    pub oom: Option<(String, u64)>,
    /// The app's backups, when it has backup settings on the host.
    pub backups: Option<AppBackups>,
}

/// What `script` printed, run with the same `sections`, for `settings`'s
/// app (one of the apps it was written for).
pub fn parse(
    sections: &Sections,
    text: &str,
    settings: &WatchSettings,
    now: OffsetDateTime,
) -> Facts {
    let parts = sections.parse(text);
    let part = |name: &str| parts.optional(name).unwrap_or("");
    let docker = part("docker");
    let projects: Vec<&str> = part("projects")
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(app, _)| *app == settings.app)
        .map(|(_, project)| project)
        .collect();
    Facts {
        sites: settings
            .sites
            .iter()
            .map(|s| {
                let name = format!("{} {}", settings.app, s.name);
                SiteFacts {
                    name: s.name.clone(),
                    health: s.health.clone(),
                    answer: parse_answer(part(&format!("site {name}"))),
                    certificate: parse_certificate(part(&format!("certificate {name}"))),
                }
            })
            .collect(),
        containers: settings
            .project
            .as_ref()
            .and_then(|_| parts.optional("containers"))
            .map(|text| parse_containers(text, &projects)),
        disks: parse_disks(part("disks")),
        build_cache: docker
            .lines()
            .find_map(|l| l.strip_prefix("build-cache "))
            .and_then(|t| parse_docker_size(t.trim())),
        renewal_failed: parse_renewal(part("renewal")),
        reboot: parse_reboot(part("reboot")),
        oom: parse_oom(part("oom")),
        backups: app_backups(&parts, &settings.app, now),
    }
}

fn app_backups(parts: &Parts<'_>, app: &str, now: OffsetDateTime) -> Option<AppBackups> {
    backup_status::parse(parts, now)
        .into_iter()
        .find(|b| b.app == app)
}

/// curl's `%{http_code}` on the last line, its error (if any) before it.
fn parse_answer(text: &str) -> Result<u16, String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let code = lines.last().and_then(|l| l.trim().parse::<u16>().ok());
    match code {
        Some(code) if code != 0 => Ok(code),
        _ => {
            let error = lines
                .iter()
                .find(|l| l.starts_with("curl:"))
                .map_or("no answer", |l| l.trim_start_matches("curl: "));
            Err(error.to_string())
        }
    }
}

fn parse_certificate(text: &str) -> Option<Result<CertInfo, String>> {
    (!text.trim().is_empty()).then(|| CertInfo::from_pem_chain(text))
}

/// `project\tservice\tname\tstate\thealth\trestarts\texit\tstarted` lines, the
/// containers of `projects` kept; `error ...` when Docker did not answer.
pub fn parse_containers(text: &str, projects: &[&str]) -> Result<Vec<ContainerFacts>, String> {
    let mut containers = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(error) = line.strip_prefix("error ") {
            return Err(error.trim().to_string());
        }
        let f: Vec<&str> = line.split('\t').collect();
        // Another project's container is none of this app's business, even
        // one whose labels read oddly.
        if !projects.contains(&f[0]) {
            continue;
        }
        let [_, service, name, state, health, restarts, exit, started] = f[..] else {
            return Err(format!("docker inspect printed {line:?}"));
        };
        let name = name.trim_start_matches('/').to_string();
        containers.push(ContainerFacts {
            service: if service.is_empty() || service == "<no value>" {
                name.clone()
            } else {
                service.to_string()
            },
            name,
            state: state.to_string(),
            health: (health != "-").then(|| health.to_string()),
            restarts: restarts.trim().parse().unwrap_or(0),
            exit_code: exit.trim().parse().unwrap_or(0),
            // Docker's zero time (0001-01-01) for one never started.
            started: OffsetDateTime::parse(
                started.trim(),
                &time::format_description::well_known::Rfc3339,
            )
            .ok()
            .filter(|t| t.year() > 1),
        });
    }
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(containers)
}

/// `df -Pk` lines, each mount once.
fn parse_disks(text: &str) -> Vec<DiskFacts> {
    let mut disks: Vec<DiskFacts> = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 {
            continue;
        }
        let kib = |s: &str| s.parse::<u64>().ok().map(|n| n * 1024);
        let (Some(size), Some(used), Some(available)) = (kib(f[1]), kib(f[2]), kib(f[3])) else {
            continue;
        };
        let mount = f[5..].join(" ");
        if disks.iter().all(|d| d.mount != mount) {
            disks.push(DiskFacts {
                mount,
                size,
                used,
                available,
            });
        }
    }
    disks
}

/// Docker's human sizes: `0B`, `512kB`, `1.2GB` (powers of 1000).
pub fn parse_docker_size(text: &str) -> Option<u64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.trim().parse().ok()?;
    let factor = match unit.trim().to_ascii_uppercase().as_str() {
        "B" => 1e0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return None,
    };
    Some((number * factor) as u64)
}

/// `systemctl show` of the renewal service: its result when it ran and failed.
fn parse_renewal(text: &str) -> Option<String> {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    };
    let ran = value("ExecMainExitTimestamp").is_some_and(|t| !t.is_empty());
    match (value("LoadState"), value("Result")) {
        (Some("loaded"), Some(result)) if ran && result != "success" => Some(result.to_string()),
        _ => None,
    }
}

fn parse_reboot(text: &str) -> Option<Vec<String>> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    (lines.next() == Some("required")).then(|| {
        let mut packages: Vec<String> = lines.map(str::to_string).collect();
        packages.sort();
        packages.dedup();
        packages
    })
}

fn parse_oom(text: &str) -> Option<(String, u64)> {
    let mut boot = None;
    let mut count = None;
    for line in text.lines().map(str::trim) {
        match line.strip_prefix("oom_kill ") {
            Some(n) => count = n.trim().parse().ok(),
            None if !line.is_empty() => boot = Some(line.to_string()),
            None => {}
        }
    }
    Some((boot?, count?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from `docker inspect` on the test VM's shop stack: a healthy
    /// database, a crash-looping worker, a stopped web container; and
    /// another project's container.
    const DOCKER: &str = "vpsup-shop\tdb\t/vpsup-shop-db-1\trunning\thealthy\t0\t0\t2026-12-06T06:49:23.453213504Z\n\
        vpsup-shop\tworker\t/vpsup-shop-worker-1\trestarting\t-\t7\t1\t2026-12-06T06:50:01.5Z\n\
        vpsup-blog\tweb\t/vpsup-blog-web-1\trunning\t-\t0\t0\t2026-12-06T06:49:23Z\n\
        vpsup-shop\tweb\t/vpsup-shop-web-1\texited\t-\t0\t137\t0001-01-01T00:00:00Z\n";

    #[test]
    fn containers_read_from_docker_inspect() {
        let c = parse_containers(DOCKER, &["vpsup-shop"]).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[0],
            ContainerFacts {
                service: "db".into(),
                name: "vpsup-shop-db-1".into(),
                state: "running".into(),
                health: Some("healthy".into()),
                restarts: 0,
                exit_code: 0,
                started: Some(
                    OffsetDateTime::parse(
                        "2026-12-06T06:49:23.453213504Z",
                        &time::format_description::well_known::Rfc3339
                    )
                    .unwrap()
                ),
            }
        );
        assert_eq!(c[1].started, None, "never started");
        assert_eq!(c[2].name, "vpsup-shop-worker-1");
        assert_eq!(c[2].restarts, 7);
        assert_eq!(c[2].health, None);
        assert_eq!(c[1].exit_code, 137);
        let blog = parse_containers(DOCKER, &["vpsup-blog"]).unwrap();
        assert_eq!(blog.len(), 1);
        assert_eq!(blog[0].name, "vpsup-blog-web-1");
        assert_eq!(
            parse_containers("error Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n", &["vpsup-shop"]),
            Err("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?".into())
        );
        assert_eq!(parse_containers("", &["vpsup-shop"]), Ok(vec![]));
    }

    /// The script, run for real for two apps with a stand-in `docker` that
    /// knows containers of both apps' projects, both of shop's slots and a
    /// project of nobody's (and logs what it is asked): each app gets its
    /// project's containers and those of the slot its `serving` file names;
    /// Docker is asked once per run whatever the number of apps, its slow
    /// answers once an hour; a container gone before `docker inspect` is
    /// missing, and any other failure of Docker's is every app's error.
    #[test]
    fn one_run_asks_docker_once_for_every_app() {
        use crate::transport::script::testing::write_executable;
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        write_executable(
            &bin.join("docker"),
            &format!(
                r#"#!/bin/sh
echo "$*" >> {calls}
case "$1" in
  ps) [ -e {fail} ] && {{ echo "cannot list" >&2; exit 1; }}
      printf 'c-%s\n' vpsup-shop vpsup_blue-shop vpsup_green-shop vpsup-blog nobodys ;;
  inspect) shift 3; status=0
      for id in "$@"; do
        if [ "$id" = "$(cat {gone} 2>/dev/null)" ]; then echo "Error: No such object: $id" >&2; status=1; continue; fi
        printf '%s\tweb\t/%s\trunning\t-\t0\t0\t2026-12-06T06:49:23Z\n' "${{id#c-}}" "$id"
      done
      [ -e {broken} ] && {{ echo "Error response from daemon: broken" >&2; exit 1; }}
      exit $status ;;
  info) echo /var/lib/docker ;;
  system) printf 'Images\t1GB\nBuild Cache\t1.5GB\n' ;;
esac
"#,
                calls = calls.display(),
                fail = dir.path().join("fail").display(),
                gone = dir.path().join("gone").display(),
                broken = dir.path().join("broken").display(),
            ),
        );
        let apps_dir = dir.path().join("apps");
        std::fs::create_dir_all(apps_dir.join("shop")).unwrap();
        let app = |name: &str| -> WatchSettings {
            toml::from_str(&format!(
                "app = \"{name}\"\nhost = \"h\"\nproject = \"vpsup-{name}\"\napps_dir = \"{}\"\n",
                apps_dir.display()
            ))
            .unwrap()
        };
        let apps = [app("shop"), app("blog")];
        let serving = apps_dir.join("shop/serving");
        let cache = dir.path().join("run/docker-facts");
        let run = |serving_says: Option<&str>| {
            match serving_says {
                Some(text) => std::fs::write(&serving, text).unwrap(),
                None => drop(std::fs::remove_file(&serving)),
            }
            std::fs::write(&calls, "").unwrap();
            let sections = Sections::with_nonce(3);
            let out = std::process::Command::new("sh")
                .args([
                    "-c",
                    &format!(
                        "PATH={}:$PATH\n{}",
                        bin.display(),
                        script(&sections, &apps, &cache)
                    ),
                ])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let facts: Vec<Facts> = apps
                .iter()
                .map(|app| parse(&sections, &text, app, OffsetDateTime::now_utc()))
                .collect();
            let names: Vec<Result<Vec<String>, String>> = facts
                .iter()
                .map(|f| {
                    f.containers
                        .clone()
                        .unwrap()
                        .map(|c| c.into_iter().map(|c| c.name).collect())
                })
                .collect();
            let asked: Vec<String> = std::fs::read_to_string(&calls)
                .unwrap()
                .lines()
                .map(|l| l.split(' ').next().unwrap().to_string())
                .collect();
            (names, asked, facts[0].build_cache)
        };
        let ok = |names: &[&str]| Ok(names.iter().map(|n| n.to_string()).collect::<Vec<_>>());

        let (names, asked, build_cache) = run(None);
        assert_eq!(names, [ok(&["c-vpsup-shop"]), ok(&["c-vpsup-blog"])]);
        assert_eq!(asked, ["ps", "inspect", "info", "system"]);
        assert_eq!(build_cache, Some(1_500_000_000));
        // Within the hour: Docker's data directory and build cache are
        // remembered, not asked again.
        let (names, asked, build_cache) = run(Some("green\n"));
        assert_eq!(
            names,
            [
                ok(&["c-vpsup-shop", "c-vpsup_green-shop"]),
                ok(&["c-vpsup-blog"])
            ]
        );
        assert_eq!(asked, ["ps", "inspect"]);
        assert_eq!(build_cache, Some(1_500_000_000));
        let (names, _, _) = run(Some("blue\n"));
        assert_eq!(names[0], ok(&["c-vpsup-shop", "c-vpsup_blue-shop"]));
        let (names, _, _) = run(Some("red\n"));
        assert_eq!(names[0], ok(&["c-vpsup-shop"]));

        // A container removed between `docker ps` and `docker inspect` (a
        // one-off run, a slot being stopped) is missing, not an error.
        std::fs::write(dir.path().join("gone"), "c-vpsup-blog").unwrap();
        let (names, _, _) = run(Some("blue\n"));
        assert_eq!(names, [ok(&["c-vpsup-shop", "c-vpsup_blue-shop"]), ok(&[])]);
        // Anything else Docker says is every app's error.
        std::fs::write(dir.path().join("broken"), "").unwrap();
        let (names, _, _) = run(Some("blue\n"));
        let broken = Err("Error response from daemon: broken".to_string());
        assert_eq!(names, [broken.clone(), broken]);
        std::fs::write(dir.path().join("fail"), "").unwrap();
        let (names, _, _) = run(Some("blue\n"));
        let failed = Err("cannot list".to_string());
        assert_eq!(names, [failed.clone(), failed]);
    }

    #[test]
    fn curl_answers_and_failures() {
        assert_eq!(parse_answer("200\n"), Ok(200));
        assert_eq!(parse_answer("502\n"), Ok(502));
        assert_eq!(
            parse_answer("curl: (7) Failed to connect to 127.0.0.1 port 443 after 0 ms: Couldn't connect to server\n000\n"),
            Err("(7) Failed to connect to 127.0.0.1 port 443 after 0 ms: Couldn't connect to server".into())
        );
        assert_eq!(parse_answer(""), Err("no answer".into()));
    }

    #[test]
    fn disks_once_per_mount_in_bytes() {
        let df = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n\
                  /dev/vda         8191416  6000000   1775000      78% /\n\
                  /dev/vda         8191416  6000000   1775000      78% /\n\
                  /dev/vdb        10000000  9500000    500000      95% /var/lib/docker\n";
        let disks = parse_disks(df);
        assert_eq!(disks.len(), 2);
        assert_eq!(disks[0].mount, "/");
        assert_eq!(disks[0].used, 6_000_000 * 1024);
        assert_eq!(disks[0].percent(), 78);
        assert_eq!(disks[1].percent(), 95);
    }

    #[test]
    fn docker_sizes_renewal_reboot_and_oom() {
        assert_eq!(parse_docker_size("0B"), Some(0));
        assert_eq!(parse_docker_size("1.5GB"), Some(1_500_000_000));
        assert_eq!(parse_docker_size("512kB"), Some(512_000));
        assert_eq!(parse_docker_size(""), None);
        let show = |result: &str| {
            format!("LoadState=loaded\nResult={result}\nExecMainExitTimestamp=Thu 2026-01-08 03:12:00 UTC\n")
        };
        assert_eq!(parse_renewal(&show("success")), None);
        assert_eq!(parse_renewal(&show("exit-code")), Some("exit-code".into()));
        assert_eq!(
            parse_renewal("LoadState=loaded\nResult=success\nExecMainExitTimestamp=\n"),
            None
        );
        assert_eq!(
            parse_renewal("LoadState=not-found\nResult=exit-code\nExecMainExitTimestamp=x\n"),
            None
        );
        assert_eq!(parse_reboot(""), None);
        assert_eq!(
            parse_reboot("required\nlinux-image-6.8.0-51-generic\nlibc6\nlibc6\n"),
            Some(vec!["libc6".into(), "linux-image-6.8.0-51-generic".into()])
        );
        assert_eq!(
            parse_oom("0f1e2d3c-aaaa-bbbb-cccc-0123456789ab\noom_kill 3\n"),
            Some(("0f1e2d3c-aaaa-bbbb-cccc-0123456789ab".into(), 3))
        );
        assert_eq!(parse_oom("0f1e\n"), None);
    }
}
