//! What `--host` reads, in one exec as root: whether docker is there, the
//! generated secrets' names, each named volume's and data path's size, and
//! what each container uses now; with `--with-secrets` also the values
//! (stdout only: never in a process argument, a log or a manifest). One
//! script builder, one parser, both pure.

use std::collections::BTreeMap;

use super::{Measured, Usage};
use crate::deploy::remote::{project_name, AppPaths};
use crate::deploy::switch::Slot;
use crate::transport::script::quote;
use crate::transport::sections::Sections;

const DOCKER: &str = "docker";
const SECRETS: &str = "secrets";
const VOLUMES: &str = "volumes";
const DATA: &str = "data";
const STATS: &str = "stats";
const VALUES: &str = "values";
const ENV: &str = "env";

/// The script. `data_paths`: the app's data (`state`, `data/uploads`);
/// `env_files`: release-relative env files to read with `with_secrets`.
pub fn script(
    sections: &Sections,
    app: &str,
    data_paths: &[String],
    env_files: &[String],
    with_secrets: bool,
) -> String {
    let paths = AppPaths::new(app);
    // The app's project, its bare name (an earlier vpsup's), and both
    // slots, where its site services run (deploy::switch).
    let projects = [project_name(app), app.to_string()]
        .into_iter()
        .chain(Slot::both().map(|slot| slot.project(app)))
        .map(|p| quote(&p))
        .collect::<Vec<_>>()
        .join(" ");
    let docker = "command -v docker >/dev/null 2>&1 && echo present";
    let secrets = format!("cut -d= -f1 {} 2>/dev/null", quote(&paths.secrets()));
    let volumes = format!(
        "for p in {projects}; do for v in $(docker volume ls -q --filter label=com.docker.compose.project=$p 2>/dev/null); do \
         printf '%s\\t%s\\n' \"$(docker volume inspect -f '{{{{index .Labels \"com.docker.compose.volume\"}}}}' \"$v\")\" \
         \"$(du -sb \"$(docker volume inspect -f '{{{{.Mountpoint}}}}' \"$v\")\" | cut -f1)\"; done; done"
    );
    let mut data = String::new();
    for path in data_paths {
        let full = format!("{}/{path}", paths.data_dir());
        data.push_str(&format!(
            "[ ! -e {q} ] || printf '%s\\t%s\\n' {p} \"$(du -sb {q} | cut -f1)\"\n",
            q = quote(&full),
            p = quote(path)
        ));
    }
    let stats = format!(
        "ids=$(for p in {projects}; do docker ps -q --filter label=com.docker.compose.project=$p; done)\n\
         [ -z \"$ids\" ] || docker stats --no-stream --format '{{{{.ID}}}}\\t{{{{.CPUPerc}}}}\\t{{{{.MemUsage}}}}' $ids | while IFS=\"$(printf '\\t')\" read -r id cpu mem; do \
         printf '%s\\t%s\\t%s\\n' \"$(docker inspect -f '{{{{index .Config.Labels \"com.docker.compose.service\"}}}}' \"$id\")\" \"$cpu\" \"$mem\"; done"
    );
    let mut parts: Vec<(&str, String)> = vec![
        (DOCKER, docker.to_string()),
        (SECRETS, secrets),
        (VOLUMES, volumes),
        (DATA, data),
        (STATS, stats),
    ];
    if with_secrets {
        parts.push((
            VALUES,
            format!("cat {} 2>/dev/null", quote(&paths.secrets())),
        ));
        let mut env = String::new();
        for file in env_files {
            env.push_str(&format!(
                "cat {} 2>/dev/null; echo\n",
                quote(&format!("{}/current/{file}", paths.dir))
            ));
        }
        parts.push((ENV, env));
    }
    let mut script = sections.script(parts.iter().map(|(n, b)| (*n, b.as_str())));
    script.push_str("exit 0\n");
    script
}

/// What came back: the measurements, and the secret values when asked
/// (`(generated, env files)`, each `KEY=value` lines).
#[derive(Debug)]
pub struct Gathered {
    pub measured: Measured,
    pub values: Option<(String, String)>,
}

pub fn parse(sections: &Sections, host: &str, output: &str) -> Result<Gathered, String> {
    let parts = sections.parse(output);
    let get = |name: &str| parts.get(name).map_err(|e| e.to_string());
    if get(DOCKER)?.trim() != "present" {
        return Err(format!(
            "{host} has no docker: nothing to measure (is the app deployed there? `vpsup deploy` first, or export without --host)"
        ));
    }
    let mut data_bytes = BTreeMap::new();
    for line in get(VOLUMES)?.lines().chain(get(DATA)?.lines()) {
        if let Some((name, bytes)) = line.split_once('\t') {
            if let Ok(b) = bytes.trim().parse::<u64>() {
                if !name.is_empty() {
                    *data_bytes.entry(name.to_string()).or_insert(0) += b;
                }
            }
        }
    }
    let mut usage = BTreeMap::new();
    for line in get(STATS)?.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        if let [service, cpu, mem] = fields.as_slice() {
            let cpu_millis = cpu
                .trim()
                .trim_end_matches('%')
                .parse::<f64>()
                .map(|p| (p * 10.0).ceil() as u64)
                .unwrap_or(0);
            let memory_bytes = mem
                .split('/')
                .next()
                .and_then(|m| bytes_of(m.trim()))
                .unwrap_or(0);
            let entry: &mut Usage = usage.entry(service.to_string()).or_default();
            entry.cpu_millis = entry.cpu_millis.max(cpu_millis);
            entry.memory_bytes = entry.memory_bytes.max(memory_bytes);
        }
    }
    let secret_names = get(SECRETS)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let values = match (parts.get(VALUES), parts.get(ENV)) {
        (Ok(v), Ok(e)) => Some((v.to_string(), e.to_string())),
        _ => None,
    };
    Ok(Gathered {
        measured: Measured {
            host: host.to_string(),
            data_bytes,
            usage,
            secret_names,
        },
        values,
    })
}

/// docker stats' sizes: `12.5MiB`, `1.2GiB`, `512KiB`, `800B`, `3MB`.
fn bytes_of(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    let factor: f64 = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return None,
    };
    Some((n * factor) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_output_reads_as_measurements() {
        let s = Sections::with_nonce(7);
        let h = |n: &str| format!("\n{} {n}\n", s.marker());
        let out = format!(
            "{}present{}DB_PASSWORD\nSECRET_KEY{}dbdata\t2147483648\n{}state\t4096\n{}db\t1.50%\t300MiB / 1.9GiB\nbackend\t0.20%\t20.5MiB / 1.9GiB\n",
            h(DOCKER), h(SECRETS), h(VOLUMES), h(DATA), h(STATS)
        );
        let g = parse(&s, "web", &out).unwrap();
        assert_eq!(g.measured.secret_names, ["DB_PASSWORD", "SECRET_KEY"]);
        assert_eq!(g.measured.data_bytes["dbdata"], 2 << 30);
        assert_eq!(g.measured.data_bytes["state"], 4096);
        assert_eq!(
            g.measured.usage["db"],
            Usage {
                cpu_millis: 15,
                memory_bytes: 300 << 20
            }
        );
        assert!(g.values.is_none());
    }

    #[test]
    fn no_docker_is_a_clear_message() {
        let s = Sections::with_nonce(7);
        let out = format!(
            "\n{} {DOCKER}\n\n{} {SECRETS}\n\n{} {VOLUMES}\n\n{} {DATA}\n\n{} {STATS}\n",
            s.marker(),
            s.marker(),
            s.marker(),
            s.marker(),
            s.marker()
        );
        let err = parse(&s, "web", &out).unwrap_err();
        assert!(err.contains("web has no docker"), "{err}");
    }

    #[test]
    fn the_script_never_carries_a_value_and_reads_values_only_when_asked() {
        let s = Sections::with_nonce(7);
        let without = script(&s, "shop", &["state".into()], &[".env".into()], false);
        assert!(!without.contains("cat /srv/vpsup/shop/shared/secrets.env"));
        // Site services run in a slot: both slots are measured too.
        assert_eq!(
            without
                .matches("for p in vpsup-shop shop vpsup_blue-shop vpsup_green-shop; do")
                .count(),
            2,
            "{without}"
        );
        assert!(without.contains("du -sb /srv/vpsup/shop/data/state"));
        let with = script(&s, "shop", &[], &[".env".into()], true);
        assert!(with.contains("cat /srv/vpsup/shop/shared/secrets.env"));
        assert!(with.contains("cat /srv/vpsup/shop/current/.env"));
    }

    #[test]
    fn docker_sizes_read() {
        assert_eq!(bytes_of("20.5MiB"), Some(21495808));
        assert_eq!(bytes_of("800B"), Some(800));
        assert_eq!(bytes_of("1GB"), Some(1_000_000_000));
        assert_eq!(bytes_of("lots"), None);
    }
}
