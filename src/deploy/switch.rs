//! Zero-downtime deploys, the host's side (docs/zero-downtime.md): the
//! scripts that start a release's site services beside the running ones,
//! recreate what changed of the rest, let the old instances drain once
//! nginx serves the new ones, and stop them; each built here, beside the
//! parser of what it prints. The nginx switch itself is
//! `AppPaths::activate_script` (`remote::parse_switched` reads its time).
//!
//! A site's services run in a slot: the compose project
//! `vpsup-<app>-blue` or `-green`, on the slot's own loopback ports
//! (`ports::slot_ports`), joined to the app's networks (so they reach the
//! database by its service name) and volumes (by the names the app's
//! project gave them). The other services stay in the app's project
//! `vpsup-<app>`. A release starts in the slot nginx does not point at, so
//! whatever that slot holds (a failed deploy's leftovers) never serves.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::compose_cli::Stack;
use super::ports::{self, Target};
use super::start;
use crate::transport::script::quote;
use crate::transport::sections::Sections;

/// One of the two compose projects a site's services alternate between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    Blue,
    Green,
}

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }

    /// Where a release starts, beside what runs in `serving` (`None`: the
    /// site services run in the app's own project, as before zero-downtime
    /// deploys, or nowhere yet).
    pub fn next(serving: Option<Slot>) -> Slot {
        match serving {
            Some(Slot::Blue) => Slot::Green,
            Some(Slot::Green) | None => Slot::Blue,
        }
    }

    /// The slot's compose project.
    pub fn project(self, app: &str) -> String {
        format!("vpsup-{app}-{}", self.name())
    }

    /// The compose file (in the release) a slot runs with besides the
    /// project's: written when the release starts in it (a rollback may
    /// start a release in the other slot).
    pub fn override_file(self) -> String {
        format!(".vpsup/slot-{}.json", self.name())
    }
}

/// The slot's compose override: each target published on the slot's
/// loopback port, and the app's own networks and volumes used by their names
/// in the app's project `app_project` (`volume_prefix`: the volumes'
/// prefix, the app's bare name for volumes an earlier vpsup made) instead of
/// new ones of the slot's.
pub fn slot_override(
    app_project: &str,
    networks: &[String],
    volumes: &[String],
    volume_prefix: &str,
    ports: &BTreeMap<Target, u16>,
) -> Value {
    let mut nets = serde_json::Map::new();
    for net in std::iter::once("default").chain(networks.iter().map(String::as_str)) {
        nets.insert(
            net.to_string(),
            json!({"name": format!("{app_project}_{net}"), "external": true}),
        );
    }
    let vols: serde_json::Map<String, Value> = volumes
        .iter()
        .map(|v| {
            (
                v.clone(),
                json!({"name": format!("{volume_prefix}_{v}"), "external": true}),
            )
        })
        .collect();
    let mut doc = ports::compose_override(ports);
    doc["networks"] = Value::Object(nets);
    if !vols.is_empty() {
        doc["volumes"] = Value::Object(vols);
    }
    doc
}

/// The health gate of a slot (as root, `start::parse_gate` reads it): the
/// slot's override written at `override_path`, what the slot holds removed
/// (never what serves: see the module's header), `services` started there
/// (the app's project runs what they depend on), then each `(path, port)`
/// of `health` on the slot's ports.
pub fn slot_gate_script(
    sections: &Sections,
    stack: &Stack<'_>,
    override_path: &str,
    override_doc: &Value,
    services: &[String],
    health: &[(String, u16)],
    timeout: u32,
) -> String {
    let before = format!(
        "printf '%s\\n' {doc} > {path}\n{down} >/dev/null 2>&1 || true\n",
        doc = quote(&override_doc.to_string()),
        path = quote(override_path),
        down = stack.down(),
    );
    start::gate(
        sections,
        &before,
        &stack.up_services(services, true, timeout),
        stack,
        health,
        timeout,
    )
}

/// The app's project's part (as root, `start::parse_gate` reads it): the
/// services the plan left `unchanged` started if they are not running
/// (never recreated), then the `changed` ones built and recreated; no site
/// service among either.
pub fn in_place_script(
    sections: &Sections,
    stack: &Stack<'_>,
    unchanged: &[String],
    changed: &[String],
    timeout: u32,
) -> String {
    let mut up = Vec::new();
    if !unchanged.is_empty() {
        up.push(stack.up_services(unchanged, false, timeout));
    }
    if !changed.is_empty() {
        up.push(stack.up_services(changed, true, timeout));
    }
    if up.is_empty() {
        return String::new();
    }
    start::gate(
        sections,
        "",
        &format!("{{ {}; }}", up.join(" && ")),
        stack,
        &[],
        timeout,
    )
}

/// What drains: the old instances each site's nginx locations reached, by
/// their loopback ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draining {
    pub domain: String,
    pub ports: Vec<u16>,
}

/// Waits, after nginx switched, until no connection reaches the old ports
/// of each site (in-flight requests answered, WebSockets closed), or until
/// `drain_secs` after the start; prints `drained DOMAIN MS OPEN` per site
/// (`OPEN`: connections still open at the end, cut when the old instances
/// stop). nginx's upstream connections close with each response (vpsup's
/// site files keep none alive), so what stays open is work in progress.
pub fn drain_script(sites: &[Draining], drain_secs: u64) -> String {
    let mut script =
        format!("start=$(date +%s%N)\ndeadline=$(( start + {drain_secs} * 1000000000 ))\n");
    for site in sites {
        let domain = quote(&site.domain);
        if site.ports.is_empty() {
            script.push_str(&format!("echo {DRAINED} {domain} 0 0\n"));
            continue;
        }
        let filter = site
            .ports
            .iter()
            .map(|p| format!("dport = :{p}"))
            .collect::<Vec<_>>()
            .join(" or ");
        script.push_str(&format!(
            r#"while :; do
  n=$(ss -Htn state established '( {filter} )' | wc -l)
  now=$(date +%s%N)
  if [ "$n" -eq 0 ] || [ "$now" -ge "$deadline" ]; then echo {DRAINED} {domain} $(( (now - start) / 1000000 )) "$n"; break; fi
  sleep 0.1
done
"#
        ));
    }
    script
}

const DRAINED: &str = "drained";

/// One site's drain, as `drain_script` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drained {
    pub domain: String,
    pub ms: u64,
    /// Connections still open when the drain period ended.
    pub open: u64,
}

pub fn parse_drain(stdout: &str) -> Vec<Drained> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != DRAINED {
                return None;
            }
            Some(Drained {
                domain: words.next()?.to_string(),
                ms: words.next()?.parse().ok()?,
                open: words.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// Where the old instances of a release's site services run.
pub enum Old<'a> {
    /// A slot: its whole project goes.
    Slot(Stack<'a>),
    /// The app's own project (a release deployed before zero-downtime
    /// deploys): only these site services go.
    InPlace(Stack<'a>, &'a [String]),
}

/// Stops the old instances (SIGTERM first: each finishes what it does
/// within its `stop_grace_period`) and removes them; once drained.
pub fn stop_old_script(old: &Old<'_>) -> String {
    match old {
        Old::Slot(stack) => format!("{}\n", stack.down()),
        Old::InPlace(stack, services) => format!("{}\n", stack.remove(services)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::script::testing::{sh_ok, write_executable};

    fn stack<'a>(project: &'a str, files: &'a [String]) -> Stack<'a> {
        Stack {
            project,
            dir: "/srv/vpsup/shop/releases/r2",
            files,
            env_files: &[],
            secrets_env: None,
            dot_env: false,
        }
    }

    #[test]
    fn slots_alternate_and_name_their_projects() {
        assert_eq!(Slot::next(None), Slot::Blue);
        assert_eq!(Slot::next(Some(Slot::Blue)), Slot::Green);
        assert_eq!(Slot::next(Some(Slot::Green)), Slot::Blue);
        assert_eq!(Slot::Green.project("shop"), "vpsup-shop-green");
        assert_eq!(Slot::Blue.override_file(), ".vpsup/slot-blue.json");
    }

    /// The slot joins the app's networks and volumes instead of making its
    /// own, and publishes on loopback only.
    #[test]
    fn the_slot_override_joins_the_apps_networks_and_volumes() {
        let ports = BTreeMap::from([(("web".to_string(), 80), 23456)]);
        let doc = slot_override(
            "vpsup-shop",
            &["backend".to_string()],
            &["assets".to_string()],
            "vpsup-shop",
            &ports,
        );
        assert_eq!(
            doc,
            json!({
                "services": {"web": {"ports": ["127.0.0.1:23456:80"]}},
                "networks": {
                    "default": {"name": "vpsup-shop_default", "external": true},
                    "backend": {"name": "vpsup-shop_backend", "external": true}
                },
                "volumes": {"assets": {"name": "vpsup-shop_assets", "external": true}}
            })
        );
        assert!(super::super::port_guard::exposures(&doc)
            .unwrap()
            .is_empty());
        let none = slot_override("vpsup-shop", &[], &[], "shop", &ports);
        assert!(none.get("volumes").is_none());
    }

    /// The slot's gate, run with a stand-in `docker`: the override is
    /// written, the slot emptied first, only the site services started;
    /// a failed start reads as the gate's failure.
    #[test]
    fn the_slot_gate_writes_its_override_and_starts_only_the_site_services() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("docker.log");
        let status = dir.path().join("status");
        std::fs::write(&status, "0").unwrap();
        write_executable(
            &dir.path().join("docker"),
            &format!(
                "#!/bin/sh\necho \"$*\" >> {log}\ncase \"$*\" in *' ps '*) printf 'web\\texited\\t\\n' ;; esac\ncase \"$*\" in *' up '*) exit $(cat {status}) ;; esac\n",
                log = log.display(),
                status = status.display()
            ),
        );
        let files = [
            "compose.yml".to_string(),
            ".vpsup/slot-green.json".to_string(),
        ];
        let s = stack("vpsup-shop-green", &files);
        let override_path = dir.path().join("slot-green.json").display().to_string();
        let doc =
            json!({"networks": {"default": {"name": "vpsup-shop_default", "external": true}}});
        let sections = Sections::with_nonce(7);
        let script = slot_gate_script(
            &sections,
            &s,
            &override_path,
            &doc,
            &["web".to_string()],
            &[],
            30,
        );
        let with_docker = format!("PATH={}:$PATH\n{script}", dir.path().display());
        sh_ok(&with_docker);
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(&override_path).unwrap()).unwrap();
        assert_eq!(written, doc);
        let calls = std::fs::read_to_string(&log).unwrap();
        let calls: Vec<&str> = calls.lines().collect();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(calls[0].contains("-p vpsup-shop-green") && calls[0].ends_with(" down"));
        assert!(calls[1].ends_with(" up -d --build --no-deps --wait --wait-timeout 30 web"));

        std::fs::write(&status, "1").unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", &with_docker])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let why = start::parse_gate(
            &sections,
            &String::from_utf8_lossy(&out.stdout),
            "web exited (1)",
            &BTreeMap::new(),
        );
        assert_eq!(why.services, ["web"]);
        assert_eq!(
            why.text,
            "web: exited; docker compose up said: web exited (1)"
        );
    }

    #[test]
    fn in_place_starts_unchanged_services_without_recreating_them() {
        let files = ["compose.yml".to_string()];
        let s = stack("vpsup-shop", &files);
        let sections = Sections::with_nonce(1);
        let script = in_place_script(&sections, &s, &["redis".into()], &["db".into()], 60);
        let base = s.base();
        assert!(script.contains(&format!(
            "if ! {{ {base} up -d --no-recreate --no-deps --wait --wait-timeout 60 redis && {base} up -d --build --no-deps --wait --wait-timeout 60 db; }} >&2; then"
        )), "{script}");
        assert_eq!(in_place_script(&sections, &s, &[], &[], 60), "");
    }

    #[test]
    fn old_instances_go_whole_slot_or_only_the_site_services() {
        let files = ["compose.yml".to_string()];
        let slot = stack("vpsup-shop-blue", &files);
        assert_eq!(
            stop_old_script(&Old::Slot(stack("vpsup-shop-blue", &files))),
            format!("{}\n", slot.down())
        );
        let app = stack("vpsup-shop", &files);
        let services = ["web".to_string()];
        assert_eq!(
            stop_old_script(&Old::InPlace(stack("vpsup-shop", &files), &services)),
            format!("{} rm -s -f web\n", app.base())
        );
    }

    /// The drain, run for real against a socket on this machine: it ends
    /// when the last connection to the old port closes, or at the deadline
    /// with the connections still open counted.
    #[test]
    fn the_drain_waits_for_open_connections_up_to_its_period() {
        use std::net::{TcpListener, TcpStream};
        use std::time::{Duration, Instant};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let run = |secs: u64| {
            let script = drain_script(
                &[
                    Draining {
                        domain: "shop.example.com".into(),
                        ports: vec![port],
                    },
                    Draining {
                        domain: "new.example.com".into(),
                        ports: vec![],
                    },
                ],
                secs,
            );
            parse_drain(&String::from_utf8_lossy(&sh_ok(&script).stdout))
        };
        // Nothing open: done at once.
        let idle = run(5);
        assert_eq!(idle[0].open, 0);
        assert!(idle[0].ms < 1000, "{idle:?}");
        assert_eq!(
            idle[1],
            Drained {
                domain: "new.example.com".into(),
                ms: 0,
                open: 0
            }
        );

        // A request in flight that ends after ~600 ms.
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server, _) = listener.accept().unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            drop(client);
            drop(server);
        });
        let started = Instant::now();
        let drained = run(10);
        closer.join().unwrap();
        assert_eq!(drained[0].open, 0, "{drained:?}");
        assert!(
            drained[0].ms >= 400 && started.elapsed() < Duration::from_secs(5),
            "{drained:?}"
        );

        // A WebSocket-like connection that outlives the drain period.
        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let cut = run(1);
        assert_eq!(cut[0].open, 1, "{cut:?}");
        assert!(cut[0].ms >= 1000, "{cut:?}");
    }

    #[test]
    fn drain_lines_parse_and_others_are_skipped() {
        assert_eq!(
            parse_drain("noise\ndrained a.example.com 1500 2\ndrained b 3\n"),
            [Drained {
                domain: "a.example.com".into(),
                ms: 1500,
                open: 2
            }]
        );
    }
}
