//! One fact-gathering exec per run (`scripts/watch_gather.sh`) and its
//! parser: what the host looks like now, as plain data, judged elsewhere
//! (`checks`). A part whose tool is missing reads as "not looked at", never
//! as a problem of its own.

use std::path::Path;

use serde::Deserialize;
use time::OffsetDateTime;

use super::host_settings::WatchSettings;
use crate::acme::certinfo::CertInfo;
use crate::backup::status::{self as backup_status, AppBackups};
use crate::deploy::remote::{ReleaseMeta, META_FILE};
use crate::deploy::switch::Slot;
use crate::layout::{DOCKER_SOCKET, RENEW_SERVICE, WATCH_DOCKER_CACHE};
use crate::scripts::WATCH_GATHER;
use crate::transport::script::quote;
use crate::transport::sections::{Parts, Sections};

/// Where a run reaches Docker's API, and where it keeps Docker's slow
/// answers for an hour.
#[derive(Debug, Clone, Copy)]
pub struct DockerPaths<'a> {
    pub socket: &'a Path,
    pub cache: &'a Path,
}

impl DockerPaths<'static> {
    /// A host's.
    pub fn host() -> Self {
        DockerPaths {
            socket: Path::new(DOCKER_SOCKET),
            cache: Path::new(WATCH_DOCKER_CACHE),
        }
    }
}

/// The gather script for every app in `apps`, its parts marked by
/// `sections`, Docker reached where `docker` says.
pub fn script(sections: &Sections, apps: &[WatchSettings], docker: DockerPaths<'_>) -> String {
    let sites = sites(apps);
    let openssl_args: Vec<String> = sites
        .iter()
        .flat_map(|s| [s.app, s.name, s.health, s.nginx_host, s.nginx_port].map(quote))
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
                    format!("{}/current/{META_FILE}", app.app_paths().dir),
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
        ("sites_curl", &sites_curl(sections.marker(), &sites)),
        ("sites", &openssl_args.join(" ")),
        ("projects", &projects.join(" ")),
        ("docker_socket", &quote(&docker.socket.to_string_lossy())),
        ("docker_cache", &quote(&docker.cache.to_string_lossy())),
        ("renew_service", RENEW_SERVICE),
        ("backups", &backup_status::script(sections.marker())),
    ])
}

/// A site a run asks for its health path, through its app's nginx.
struct SiteToAsk<'a> {
    app: &'a str,
    name: &'a str,
    health: &'a str,
    nginx_host: &'a str,
    nginx_port: &'a str,
}

fn sites(apps: &[WatchSettings]) -> Vec<SiteToAsk<'_>> {
    apps.iter()
        .flat_map(|app| {
            let (nginx_host, nginx_port) = app.nginx_address();
            app.sites.iter().map(move |site| SiteToAsk {
                app: &app.app,
                name: &site.name,
                health: &site.health,
                nginx_host,
                nginx_port,
            })
        })
        .collect()
}

/// One curl asking every site for its health path through the host's
/// nginx (`-k`: the certificate is judged by the checks, which say why),
/// each answer written as the part `site <app> <name>`: the HTTP status,
/// curl's error, then whatever the script's `$certs` asks for (the chain
/// nginx served, from a curl that can tell it). `:` without sites.
fn sites_curl(marker: &str, sites: &[SiteToAsk<'_>]) -> String {
    let transfers: Vec<String> = sites
        .iter()
        .map(|site| {
            let answer = format!(
                "\\n{marker} site {} {}\\n%{{http_code}}\\n%{{errormsg}}\\n",
                site.app, site.name
            );
            format!(
                "-k -s --max-time 10 -o /dev/null --resolve {} -w {}\"$certs\" {}",
                quote(&format!(
                    "{}:{}:{}",
                    site.name, site.nginx_port, site.nginx_host
                )),
                quote(&answer),
                quote(&format!(
                    "https://{}:{}{}",
                    site.name, site.nginx_port, site.health
                )),
            )
        })
        .collect();
    if transfers.is_empty() {
        return ":".to_string();
    }
    format!("curl {} 2>/dev/null", transfers.join(" --next "))
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
    // The project the app's current release runs as: an earlier vpsup's
    // release (no "project" in its metadata), rolled back to, runs as the
    // app's bare name, not as the settings say.
    let current = parts
        .optional(&format!("release {}", settings.app))
        .and_then(|text| serde_json::from_str::<ReleaseMeta>(text).ok());
    let projects: Vec<&str> = part("projects")
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(app, _)| *app == settings.app)
        .map(|(_, project)| match &current {
            Some(meta) if Some(project) == settings.project.as_deref() => {
                meta.project(&settings.app)
            }
            _ => project,
        })
        .collect();
    Facts {
        sites: settings
            .sites
            .iter()
            .map(|s| {
                let name = format!("{} {}", settings.app, s.name);
                let (answer, served) = parse_site(part(&format!("site {name}")));
                // An older curl's sites have their certificate from openssl.
                let certificate = match part(&format!("certificate {name}")) {
                    "" => served,
                    pem => Some(pem),
                };
                SiteFacts {
                    name: s.name.clone(),
                    health: s.health.clone(),
                    answer,
                    certificate: certificate.and_then(parse_certificate),
                }
            })
            .collect(),
        containers: settings
            .project
            .as_ref()
            .and_then(|_| parts.optional("containers"))
            .map(|text| parse_containers(text, &projects)),
        disks: parse_disks(part("disks")),
        build_cache: parse_build_cache(part("docker")),
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

/// A site's part: curl's `%{http_code}` (000: no HTTP answer) and
/// `%{errormsg}` lines, then the certificate chain it was served, if any.
fn parse_site(text: &str) -> (Result<u16, String>, Option<&str>) {
    let mut lines = text.trim_start_matches('\n').splitn(3, '\n');
    let code = lines.next().and_then(|l| l.trim().parse::<u16>().ok());
    let error = lines.next().map(str::trim).unwrap_or("");
    let served = lines
        .next()
        .filter(|rest| rest.contains("-----BEGIN CERTIFICATE-----"));
    let answer = match code {
        Some(code) if code != 0 => Ok(code),
        _ if error.is_empty() => Err("no answer".to_string()),
        _ => Err(error.to_string()),
    };
    (answer, served)
}

fn parse_certificate(text: &str) -> Option<Result<CertInfo, String>> {
    (!text.trim().is_empty()).then(|| CertInfo::from_pem_chain(text))
}

/// Docker's answers in the containers part, one JSON a line: the list of
/// compose containers, then each one inspected; the containers of
/// `projects` kept. `error ...` (curl's) or an answer that is Docker's
/// error is the whole part's error, except "No such container" (gone since
/// the list).
pub fn parse_containers(text: &str, projects: &[&str]) -> Result<Vec<ContainerFacts>, String> {
    let mut containers = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(error) = line.strip_prefix("error ") {
            return Err(error.trim().to_string());
        }
        let answer: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("Docker's answer does not read ({e}): {}", excerpt(line)))?;
        if answer.is_array() {
            continue; // the list: its containers come inspected next
        }
        if answer.get("Id").is_none() {
            let message = answer
                .get("message")
                .and_then(|m| m.as_str())
                .ok_or_else(|| format!("Docker answered {}", excerpt(line)))?;
            if message.starts_with("No such container") {
                continue;
            }
            return Err(format!("Docker said: {message}"));
        }
        let inspected: Inspected = serde_json::from_value(answer).map_err(|e| {
            format!(
                "docker inspect's answer does not read ({e}): {}",
                excerpt(line)
            )
        })?;
        let label = |key: &str| inspected.config.labels.get(key).map(String::as_str);
        // Another project's container is none of this app's business.
        if !label("com.docker.compose.project").is_some_and(|p| projects.contains(&p)) {
            continue;
        }
        let name = inspected.name.trim_start_matches('/').to_string();
        let state = inspected.state;
        containers.push(ContainerFacts {
            service: label("com.docker.compose.service")
                .filter(|s| !s.is_empty())
                .unwrap_or(&name)
                .to_string(),
            name,
            state: state.status,
            health: state.health.map(|h| h.status),
            restarts: inspected.restart_count,
            exit_code: state.exit_code,
            // Docker's zero time (0001-01-01) for one never started.
            started: OffsetDateTime::parse(
                &state.started_at,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()
            .filter(|t| t.year() > 1),
        });
    }
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(containers)
}

/// What `GET /containers/{id}/json` says that a run looks at.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspected {
    name: String,
    #[serde(default)]
    restart_count: u64,
    state: InspectedState,
    #[serde(default)]
    config: InspectedConfig,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedState {
    status: String,
    #[serde(default)]
    exit_code: i64,
    #[serde(default)]
    started_at: String,
    health: Option<InspectedHealth>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedHealth {
    status: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedConfig {
    #[serde(default, deserialize_with = "null_as_empty")]
    labels: std::collections::BTreeMap<String, String>,
}

/// Docker writes `null` for an empty map.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The start of a long answer, for an error message.
fn excerpt(text: &str) -> String {
    let mut cut = text.chars().take(200).collect::<String>();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

/// The build cache's size in bytes, from Docker's `/system/df` answer among
/// the docker part's lines: what `docker system df` counts (records not
/// shared with images).
fn parse_build_cache(text: &str) -> Option<u64> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Usage {
        #[serde(default, deserialize_with = "null_as_empty")]
        build_cache: Vec<Record>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Record {
        #[serde(default)]
        size: u64,
        #[serde(default)]
        shared: bool,
    }
    let line = text.lines().find(|l| l.contains("\"BuildCache\":"))?;
    let usage: Usage = serde_json::from_str(line).ok()?;
    Some(
        usage
            .build_cache
            .iter()
            .filter(|r| !r.shared)
            .map(|r| r.size)
            .sum(),
    )
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

/// Docker's answers as its API gives them, for tests here and in `checks`.
#[cfg(test)]
pub mod testing {
    use serde_json::json;

    /// `GET /containers/{id}/json`'s answer on one line (the fields a run
    /// reads among some it does not), from
    /// `project\tservice\tname\tstate\thealth\trestarts\texit\tstarted`
    /// (`-`: no healthcheck, so Docker writes no `Health`).
    pub fn inspected(line: &str) -> String {
        let f: Vec<&str> = line.trim().split('\t').collect();
        let [project, service, name, state, health, restarts, exit, started] = f[..] else {
            panic!("8 fields expected: {line:?}")
        };
        let mut state = json!({
            "Status": state,
            "Running": state == "running",
            "Restarting": state == "restarting",
            "Pid": 4242,
            "ExitCode": exit.parse::<i64>().unwrap(),
            "Error": "",
            "StartedAt": started,
            "FinishedAt": "0001-01-01T00:00:00Z",
        });
        if health != "-" {
            state["Health"] = json!({"Status": health, "FailingStreak": 0, "Log": []});
        }
        json!({
            "Id": format!("{:0>64}", name.len()),
            "Created": "2026-12-06T06:49:20.1Z",
            "Path": "docker-entrypoint.sh",
            "State": state,
            "Name": name,
            "RestartCount": restarts.parse::<u64>().unwrap(),
            "HostConfig": {"RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0}},
            "Config": {
                "Image": "postgres:16",
                "Labels": {
                    "com.docker.compose.project": project,
                    "com.docker.compose.service": service,
                    "com.docker.compose.version": "2.26.1",
                },
            },
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A healthy database, a crash-looping worker, a web container never
    /// started; another project's container, and one outside compose.
    const DOCKER: &str = "vpsup-shop\tdb\t/vpsup-shop-db-1\trunning\thealthy\t0\t0\t2026-12-06T06:49:23.453213504Z\n\
        vpsup-shop\tworker\t/vpsup-shop-worker-1\trestarting\t-\t7\t1\t2026-12-06T06:50:01.5Z\n\
        vpsup-blog\tweb\t/vpsup-blog-web-1\trunning\t-\t0\t0\t2026-12-06T06:49:23Z\n\
        vpsup-shop\tweb\t/vpsup-shop-web-1\texited\t-\t0\t137\t0001-01-01T00:00:00Z\n";

    /// The containers part as the script prints it: the list, then each
    /// container inspected.
    fn answers(extra: &[&str]) -> String {
        let mut lines = vec![r#"[{"Id":"0000000000000000000000000000000000000000000000000000000000000016","Names":["/vpsup-shop-db-1"],"State":"running","Status":"Up 2 minutes (healthy)"}]"#.to_string()];
        lines.extend(DOCKER.lines().map(testing::inspected));
        lines.extend(extra.iter().map(|l| l.to_string()));
        lines.join("\n")
    }

    #[test]
    fn containers_read_from_dockers_answers() {
        let plain = r#"{"Id":"ab12","Name":"/plain","RestartCount":0,"State":{"Status":"running","ExitCode":0,"StartedAt":"2026-12-06T06:49:23Z"},"Config":{"Labels":null}}"#;
        let gone = r#"{"message":"No such container: 0123abcd"}"#;
        let text = answers(&[plain, gone]);
        let c = parse_containers(&text, &["vpsup-shop"]).unwrap();
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
        let blog = parse_containers(&text, &["vpsup-blog"]).unwrap();
        assert_eq!(blog.len(), 1);
        assert_eq!(blog[0].name, "vpsup-blog-web-1");
        assert_eq!(parse_containers("[]\n", &["vpsup-shop"]), Ok(vec![]));
        assert_eq!(parse_containers("", &["vpsup-shop"]), Ok(vec![]));
        // curl's own failure, Docker's, and an answer that is neither.
        assert_eq!(
            parse_containers("error curl: (7) Failed to connect to docker port 80 after 0 ms: Couldn't connect to server\n", &["vpsup-shop"]),
            Err("curl: (7) Failed to connect to docker port 80 after 0 ms: Couldn't connect to server".into())
        );
        assert_eq!(
            parse_containers(
                &answers(&[r#"{"message":"Error response: broken"}"#]),
                &["vpsup-shop"]
            ),
            Err("Docker said: Error response: broken".into())
        );
        let odd = parse_containers("<html>502</html>\n", &["vpsup-shop"]).unwrap_err();
        assert!(odd.starts_with("Docker's answer does not read ("), "{odd}");
        assert!(odd.ends_with("): <html>502</html>"), "{odd}");
    }

    #[test]
    fn the_build_cache_counts_what_is_not_shared() {
        let info = r#"{"ID":"x","Containers":3,"DockerRootDir":"/var/lib/docker"}"#;
        let df = r#"{"LayersSize":0,"Images":null,"Containers":null,"Volumes":null,"BuildCache":[{"ID":"a","Size":1000000000,"Shared":false},{"ID":"b","Size":500000000,"Shared":false},{"ID":"c","Size":7,"Shared":true}]}"#;
        assert_eq!(
            parse_build_cache(&format!("{info}\n{df}\n")),
            Some(1_500_000_000)
        );
        assert_eq!(
            parse_build_cache(r#"{"LayersSize":0,"BuildCache":null}"#),
            Some(0)
        );
        assert_eq!(parse_build_cache(info), None);
        assert_eq!(parse_build_cache(""), None);
    }

    /// A stand-in for Docker's API on a Unix socket (no Docker engine on
    /// the test machine; the VM test meets the real one): containers of
    /// shop's and blog's projects, both of shop's slots and a project of
    /// nobody's; each request's path logged to `calls` in `state`, and
    /// files there that make it fail: `fail` (the list), `broken` (every
    /// inspect), `gone` (holds the one project whose container is gone).
    const STAND_IN_DOCKER: &str = r#"
import hashlib, json, os, socketserver, sys, urllib.parse
from http.server import BaseHTTPRequestHandler
sock, state = sys.argv[1], sys.argv[2]
projects = ["vpsup-shop", "vpsup_blue-shop", "vpsup_green-shop", "vpsup-blog", "blog", "nobodys"]
def cid(p): return hashlib.sha256(p.encode()).hexdigest()
def flag(name): return os.path.exists(os.path.join(state, name))
class Api(BaseHTTPRequestHandler):
    def log_message(self, *args): pass
    def answer(self, code, body):
        data = (json.dumps(body, separators=(",", ":")) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        path, _, query = self.path.partition("?")
        query = urllib.parse.parse_qs(query)
        with open(os.path.join(state, "calls"), "a") as f:
            f.write(path + "\n")
        if path == "/containers/json":
            if query != {"all": ["1"], "filters": ['{"label":["com.docker.compose.project"]}']}:
                return self.answer(400, {"message": "unexpected query %s" % query})
            if flag("fail"):
                return self.answer(500, {"message": "cannot list"})
            return self.answer(200, [{"Id": cid(p), "Names": ["/c-" + p], "Labels": {"com.docker.compose.project": p}} for p in projects])
        if path.startswith("/containers/") and path.endswith("/json"):
            id = path.split("/")[2]
            gone = open(os.path.join(state, "gone")).read() if flag("gone") else None
            p = next((p for p in projects if cid(p) == id and p != gone), None)
            if p is None:
                return self.answer(404, {"message": "No such container: " + id})
            if flag("broken"):
                return self.answer(500, {"message": "broken"})
            return self.answer(200, {"Id": id, "Name": "/c-" + p, "RestartCount": 0,
                "State": {"Status": "running", "ExitCode": 0, "StartedAt": "2026-12-06T06:49:23Z"},
                "Config": {"Labels": {"com.docker.compose.project": p, "com.docker.compose.service": "web"}}})
        if path == "/info":
            return self.answer(200, {"ID": "x", "DockerRootDir": "/var/lib/docker"})
        if path == "/system/df" and query == {"type": ["build-cache"]}:
            return self.answer(200, {"LayersSize": 0, "BuildCache": [{"Size": 1500000000, "Shared": False}, {"Size": 9, "Shared": True}]})
        self.answer(404, {"message": "page not found"})
class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
Server(sock, Api).serve_forever()
"#;

    /// The script, run for real for two apps against the stand-in Docker:
    /// each app gets its project's containers and those of the slot its
    /// `serving` file names; Docker is asked once per run whatever the
    /// number of apps (one list, every container inspected in one curl), its
    /// slow answers once an hour; a container gone before it is inspected is
    /// missing, and any other failure of Docker's is every app's error.
    #[test]
    fn one_run_asks_docker_once_for_every_app() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let calls = state.join("calls");
        let socket = dir.path().join("docker.sock");
        let mut api = std::process::Command::new("python3")
            .args(["-c", STAND_IN_DOCKER])
            .arg(&socket)
            .arg(&state)
            .spawn()
            .unwrap();
        struct Stop(std::process::Child);
        impl Drop for Stop {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            socket.exists(),
            "the stand-in Docker did not start: {:?}",
            api.try_wait()
        );
        let api = Stop(api);
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
        let cache = dir.path().join("run/docker-api");
        let run = |serving_says: Option<&str>, socket: &Path| {
            match serving_says {
                Some(text) => std::fs::write(&serving, text).unwrap(),
                None => drop(std::fs::remove_file(&serving)),
            }
            std::fs::write(&calls, "").unwrap();
            let sections = Sections::with_nonce(3);
            let docker = DockerPaths {
                socket,
                cache: &cache,
            };
            let out = std::process::Command::new("sh")
                .args(["-c", &script(&sections, &apps, docker)])
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
                .map(|path| {
                    let inspect = path.len() == "/containers//json".len() + 64;
                    if inspect { "inspect" } else { path }.to_string()
                })
                .collect();
            (names, asked, facts[0].build_cache, facts[0].disks.len())
        };
        let ok = |names: &[&str]| Ok(names.iter().map(|n| n.to_string()).collect::<Vec<_>>());

        let (names, asked, build_cache, disks) = run(None, &socket);
        assert_eq!(names, [ok(&["c-vpsup-shop"]), ok(&["c-vpsup-blog"])]);
        assert_eq!(asked[0], "/containers/json");
        assert_eq!(asked[1..7], ["inspect"; 6]);
        assert_eq!(asked[7..], ["/info", "/system/df"]);
        assert_eq!(build_cache, Some(1_500_000_000));
        assert!(disks >= 1, "df of / and of Docker's data root");
        // Within the hour: Docker's data directory and build cache are
        // remembered, not asked again.
        let (names, asked, build_cache, _) = run(Some("green\n"), &socket);
        assert_eq!(
            names,
            [
                ok(&["c-vpsup-shop", "c-vpsup_green-shop"]),
                ok(&["c-vpsup-blog"])
            ]
        );
        assert_eq!(asked.len(), 7, "{asked:?}");
        assert_eq!(build_cache, Some(1_500_000_000));
        let (names, _, _, _) = run(Some("blue\n"), &socket);
        assert_eq!(names[0], ok(&["c-vpsup-shop", "c-vpsup_blue-shop"]));
        let (names, _, _, _) = run(Some("red\n"), &socket);
        assert_eq!(names[0], ok(&["c-vpsup-shop"]));

        // The project blog's current release runs as: its metadata's (the
        // fingerprint of a service named "project" is not it), or, in a
        // release an earlier vpsup made, the app's bare name (after a
        // rollback to it, say).
        let meta = apps_dir.join("blog/current/.vpsup/release.json");
        std::fs::create_dir_all(meta.parent().unwrap()).unwrap();
        let written = |project: Option<&str>| {
            let mut meta = crate::deploy::remote::testing::meta_with(&[("project", "blog")], &[]);
            meta.project = project.map(str::to_string);
            // As deploy writes it (deploy::plan).
            serde_json::to_vec_pretty(&meta).unwrap()
        };
        std::fs::write(&meta, written(Some("vpsup-blog"))).unwrap();
        let (names, _, _, _) = run(None, &socket);
        assert_eq!(names[1], ok(&["c-vpsup-blog"]));
        std::fs::write(&meta, written(None)).unwrap();
        let (names, _, _, _) = run(None, &socket);
        assert_eq!(names[1], ok(&["c-blog"]));
        std::fs::remove_file(&meta).unwrap();

        // A container removed between the list and its inspection (a
        // one-off run, a slot being stopped) is missing, not an error.
        std::fs::write(state.join("gone"), "vpsup-blog").unwrap();
        let (names, _, _, _) = run(Some("blue\n"), &socket);
        assert_eq!(names, [ok(&["c-vpsup-shop", "c-vpsup_blue-shop"]), ok(&[])]);
        // Anything else Docker says is every app's error.
        std::fs::write(state.join("broken"), "").unwrap();
        let (names, _, _, _) = run(Some("blue\n"), &socket);
        let broken = Err("Docker said: broken".to_string());
        assert_eq!(names, [broken.clone(), broken]);
        std::fs::write(state.join("fail"), "").unwrap();
        let (names, _, _, _) = run(Some("blue\n"), &socket);
        let failed = Err("Docker said: cannot list".to_string());
        assert_eq!(names, [failed.clone(), failed]);
        // No socket: Docker is not running; one that nobody answers: curl's words.
        let missing = dir.path().join("nothing.sock");
        let (names, _, _, _) = run(Some("blue\n"), &missing);
        let stopped = Err(format!("Docker is not running (no {})", missing.display()));
        assert_eq!(names, [stopped.clone(), stopped]);
        drop(api);
        let (names, _, _, _) = run(Some("blue\n"), &socket);
        let refused = names[0].clone().unwrap_err();
        assert!(refused.starts_with("curl: (7) "), "{refused}");
    }

    #[test]
    fn site_answers_failures_and_the_chain_served() {
        assert_eq!(parse_site("200\n\n"), (Ok(200), None));
        assert_eq!(parse_site("502\n\n").0, Ok(502));
        assert_eq!(
            parse_site("000\nFailed to connect to shop.example.com port 443 after 0 ms: Couldn't connect to server\n"),
            (Err("Failed to connect to shop.example.com port 443 after 0 ms: Couldn't connect to server".into()), None)
        );
        assert_eq!(parse_site(""), (Err("no answer".into()), None));
        // What curl 7.88 writes for %{certs}: each certificate's details,
        // then its PEM.
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["shop.example.com".to_string()]).unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let text = format!("200\n\nSubject:CN = shop.example.com\nIssuer:CN = shop.example.com\nVersion:2\nStart date:Dec  6 09:27:47 2026 GMT\n{pem}\n");
        let (answer, served) = parse_site(&text);
        assert_eq!(answer, Ok(200));
        let info = parse_certificate(served.unwrap()).unwrap().unwrap();
        assert_eq!(info.names, ["shop.example.com"]);
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
    fn renewal_reboot_and_oom() {
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
