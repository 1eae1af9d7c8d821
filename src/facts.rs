//! Host facts, gathered by one shell script in one exec, then parsed here.
//! The script prints `key=value` lines; all interpretation (versions, units,
//! which address is public) happens in Rust, where it is unit-tested.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::sshd_algorithms::SshdAlgorithms;
use crate::transport::{ExecRequest, Transport, TransportError};

/// The probe. It only reads, needs no root, and runs with whatever the host
/// has: a missing tool yields an empty value, never a failure.
pub const PROBE_SCRIPT: &str = r#"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
nl='
'
# First line only, without forking: every fork costs on a slow VPS.
emit() { printf '%s=%s\n' "$1" "${2%%"$nl"*}"; }
have() { command -v "$1" >/dev/null 2>&1; }
if [ -r /etc/os-release ]; then
  ( . /etc/os-release
    emit os_id "${ID:-}"; emit os_version "${VERSION_ID:-}"
    emit os_codename "${VERSION_CODENAME:-}"; emit os_name "${PRETTY_NAME:-}" )
fi
emit kernel "$(uname -r)"
emit arch "$(uname -m)"
emit cpus "$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
emit mem_kb "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
emit swap_kb "$(awk '/^SwapTotal:/ {print $2}' /proc/meminfo)"
emit root_free_kb "$(df -Pk / | awk 'NR==2 {print $4}')"
emit hostname "$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)"
emit ipv4 "$(ip -4 -o addr show scope global 2>/dev/null | awk '{print $4}' | tr '\n' ' ')"
emit user "$(id -un)"
if [ "$(id -u)" = 0 ]; then s=root
elif ! have sudo; then s=absent
elif sudo -n true 2>/dev/null; then s=passwordless
else s=needs_password; fi
emit sudo "$s"
if [ -d /run/systemd/system ]; then i=systemd; else i="$(cat /proc/1/comm 2>/dev/null)"; fi
emit init "$i"
have docker && emit docker "$(docker --version 2>/dev/null)"
have docker && emit compose "$(docker compose version --short 2>/dev/null)"
have nginx && emit nginx "$(nginx -v 2>&1)"
have ufw && emit ufw "$(ufw version 2>/dev/null)"
# Which package provides Docker, without forking dpkg.
for p in docker-ce docker.io; do [ -e "/var/lib/dpkg/info/$p.list" ] && emit docker_package "$p" && break; done
# sshd's release: `sshd -V` prints it; an sshd that has no -V prints an error
# line, then its usage, which starts with the release. Either way: from OpenSSH_.
if have sshd; then v=$(sshd -V 2>&1); case $v in *OpenSSH_*) emit sshd "OpenSSH_${v#*OpenSSH_}" ;; esac; fi
# The ports sshd is configured for (readable as root only).
have sshd && [ "$(id -u)" = 0 ] && emit sshd_ports "$(sshd -T 2>/dev/null | awk '$1 == "port" {printf "%s ", $2}')"
if have chronyd; then t=chrony; elif have ntpd; then t=ntp
elif [ -x /usr/lib/systemd/systemd-timesyncd ] || [ -x /lib/systemd/systemd-timesyncd ]; then t=systemd-timesyncd
else t=; fi
emit time_sync "$t"
# The certificate renewal timer an earlier init set up, with its binary.
[ -e /etc/systemd/system/timers.target.wants/vpsup-renew-certs.timer ] && [ -x /usr/local/bin/vpsup ] && emit renewal_timer yes
exit 0
"#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    /// /etc/os-release's ID, VERSION_ID and VERSION_CODENAME, each only when
    /// it is what os-release(5) allows (ID, VERSION_ID: `[a-z0-9._-]`;
    /// the codename, as Debian and Ubuntu write it: `[a-z0-9]`), else empty:
    /// playbooks put them in apt's sources and in root's commands, unquoted.
    pub os_id: String,
    pub os_version: String,
    pub os_codename: String,
    /// PRETTY_NAME, free text: for messages only, never for a command.
    pub os_name: String,
    pub kernel: String,
    pub arch: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub swap_mib: u64,
    pub root_disk_free_mib: u64,
    pub hostname: String,
    /// The first global IPv4 address that is not in a private, shared or
    /// loopback range: what the internet reaches, when the host can see it.
    pub public_ipv4: Option<String>,
    pub ipv4_addresses: Vec<String>,
    pub user: String,
    pub sudo: SudoAccess,
    pub init_system: String,
    pub docker: Option<String>,
    pub compose_v2: Option<String>,
    /// The distribution's package of compose v2, where it has one:
    /// `docker-compose-v2` on Ubuntu, `docker-compose` on Debian 13. None on
    /// Debian 12, whose `docker-compose` is compose v1 (which deploy cannot
    /// use): there compose v2 comes only from Docker's repository.
    pub distro_compose_v2: Option<&'static str>,
    pub nginx: Option<String>,
    /// The host's nginx can refuse a TLS handshake (`ssl_reject_handshake`,
    /// nginx 1.19.4 and later), judged from its version, or before nginx is
    /// installed, from the one the distribution ships (see `nginx_rejects_handshake`).
    pub nginx_reject_handshake: bool,
    pub ufw: Option<String>,
    /// `docker-ce` (Docker's repository) or `docker.io` (the distribution's).
    pub docker_package: Option<String>,
    /// Ports in sshd's configuration (empty when not probed as root).
    pub sshd_ports: Vec<u16>,
    /// The OpenSSH release of the host's sshd, numbers only (`9.2` from
    /// `OpenSSH_9.2p1`).
    pub sshd_version: Option<String>,
    /// What the hardened sshd offers, for that release or, when the probe
    /// could not ask sshd, the one the distribution ships (see
    /// `sshd_algorithms`).
    pub sshd_algorithms: SshdAlgorithms,
    /// The installed time sync daemon: chrony, ntp or systemd-timesyncd.
    pub time_sync: Option<String>,
    /// vpsup's certificate renewal timer is enabled (an earlier init).
    pub renewal_timer: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SudoAccess {
    /// Logged in as root: no sudo needed.
    Root,
    Passwordless,
    NeedsPassword,
    /// sudo is not installed.
    Absent,
}

impl SudoAccess {
    pub fn describe(self) -> &'static str {
        match self {
            SudoAccess::Root => "not needed (root)",
            SudoAccess::Passwordless => "passwordless",
            SudoAccess::NeedsPassword => "asks for a password (vpsup needs passwordless sudo)",
            SudoAccess::Absent => "not installed",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{host}: the facts probe printed something unexpected ({detail}); is this a Linux host with a POSIX shell?")]
    Unparsable { host: String, detail: String },
}

/// Runs the probe (one round trip) and parses its output.
pub async fn gather(transport: &dyn Transport) -> Result<HostFacts, FactsError> {
    let out = transport
        .run_ok("facts probe", ExecRequest::new(PROBE_SCRIPT))
        .await?;
    parse(&out.stdout_str()).map_err(|detail| FactsError::Unparsable {
        host: transport.describe(),
        detail,
    })
}

/// Parses the probe's `key=value` lines.
pub fn parse(output: &str) -> Result<HostFacts, String> {
    let kv: HashMap<&str, &str> = output
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k, v.trim()))
        .collect();
    let text = |k: &str| kv.get(k).copied().unwrap_or("").to_string();
    let number = |k: &str| -> Result<u64, String> {
        let v = kv.get(k).copied().unwrap_or("");
        v.parse()
            .map_err(|_| format!("{k} should be a number, got {v:?}"))
    };
    let optional =
        |k: &str, extract: &dyn Fn(&str) -> Option<String>| kv.get(k).and_then(|v| extract(v));
    let ipv4_addresses: Vec<String> = text("ipv4")
        .split_whitespace()
        .map(|cidr| cidr.split('/').next().unwrap_or(cidr).to_string())
        .collect();
    let sudo = match kv.get("sudo").copied() {
        Some("root") => SudoAccess::Root,
        Some("passwordless") => SudoAccess::Passwordless,
        Some("needs_password") => SudoAccess::NeedsPassword,
        Some("absent") => SudoAccess::Absent,
        other => {
            return Err(format!(
                "sudo should be root/passwordless/needs_password/absent, got {other:?}"
            ))
        }
    };
    let os_id = os_release_word(&text("os_id"), "._-");
    let os_version = os_release_word(&text("os_version"), "._-");
    let sshd_version = optional("sshd", &|v| {
        version_after(v, "OpenSSH_")
            .map(|r| {
                r.chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.')
                    .collect::<String>()
            })
            .filter(|r| !r.is_empty())
    });
    Ok(HostFacts {
        sshd_algorithms: SshdAlgorithms::for_openssh(
            sshd_version
                .as_deref()
                .or_else(|| shipped(&os_id, &os_version).map(|s| s.openssh)),
        ),
        sshd_version,
        distro_compose_v2: distro_compose_v2(&os_id, &os_version),
        nginx_reject_handshake: nginx_rejects_handshake(
            kv.get("nginx")
                .and_then(|v| version_after(v, "nginx version: nginx/"))
                .as_deref(),
            &os_id,
            &os_version,
        ),
        os_id,
        os_version,
        os_codename: os_release_word(&text("os_codename"), ""),
        os_name: text("os_name"),
        kernel: text("kernel"),
        arch: text("arch"),
        cpus: number("cpus")? as u32,
        memory_mib: number("mem_kb")? / 1024,
        swap_mib: number("swap_kb")? / 1024,
        root_disk_free_mib: number("root_free_kb")? / 1024,
        hostname: text("hostname"),
        public_ipv4: ipv4_addresses.iter().find(|a| is_public_ipv4(a)).cloned(),
        ipv4_addresses,
        user: text("user"),
        sudo,
        init_system: text("init"),
        docker: optional("docker", &|v| version_after(v, "Docker version ")),
        compose_v2: optional("compose", &first_version),
        nginx: optional("nginx", &|v| version_after(v, "nginx version: nginx/")),
        ufw: optional("ufw", &|v| version_after(v, "ufw ")),
        docker_package: optional("docker_package", &non_empty),
        sshd_ports: text("sshd_ports")
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        time_sync: optional("time_sync", &non_empty),
        renewal_timer: text("renewal_timer") == "yes",
    })
}

/// `value` when it is lowercase letters, digits and `extra` only, else empty
/// (see `HostFacts::os_id`).
fn os_release_word(value: &str, extra: &str) -> String {
    let plain = value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(c));
    if plain {
        value.to_string()
    } else {
        String::new()
    }
}

/// See `HostFacts::distro_compose_v2`. Ubuntu has had `docker-compose-v2`
/// since 22.04; Debian's `docker-compose` became compose v2 in 13.
fn distro_compose_v2(os_id: &str, os_version: &str) -> Option<&'static str> {
    let major: u32 = os_version.split('.').next()?.parse().ok()?;
    match os_id {
        "ubuntu" if major >= 22 => Some("docker-compose-v2"),
        "debian" if major >= 13 => Some("docker-compose"),
        _ => None,
    }
}

/// What a supported distribution ships of what init installs or hardens,
/// for a host that does not have it yet (or could not say which it has).
struct Shipped {
    nginx: &'static str,
    openssh: &'static str,
}

/// Ubuntu 22.04: nginx 1.18, OpenSSH 8.9; 24.04: 1.24, 9.6; Debian 12:
/// 1.22, 9.2; Debian 13: 1.26, 10.0.
fn shipped(os_id: &str, os_version: &str) -> Option<Shipped> {
    let (nginx, openssh) = match (os_id, os_version) {
        ("ubuntu", "22.04") => ("1.18.0", "8.9"),
        ("ubuntu", "24.04") => ("1.24.0", "9.6"),
        ("debian", "12") => ("1.22.1", "9.2"),
        ("debian", "13") => ("1.26.3", "10.0"),
        _ => return None,
    };
    Some(Shipped { nginx, openssh })
}

/// See `HostFacts::nginx_reject_handshake`: the installed nginx's version
/// decides, else the distribution's; a system vpsup does not know is taken
/// to have a current nginx (init refuses it anyway).
fn nginx_rejects_handshake(installed: Option<&str>, os_id: &str, os_version: &str) -> bool {
    installed
        .or_else(|| shipped(os_id, os_version).map(|s| s.nginx))
        .is_none_or(|v| version_at_least(v, &[1, 19, 4]))
}

/// Whether dotted `version` (`1.24.0`, `1.26`; a suffix after the numbers
/// is ignored) is `wanted` or later.
pub fn version_at_least(version: &str, wanted: &[u32]) -> bool {
    let have: Vec<u32> = version.split('.').map_while(|p| p.parse().ok()).collect();
    have.as_slice() >= wanted
}

fn non_empty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

/// The version that follows `prefix` ("Docker version 26.1.5+dfsg1, build x" -> "26.1.5+dfsg1").
fn version_after(line: &str, prefix: &str) -> Option<String> {
    line.strip_prefix(prefix).and_then(first_version)
}

/// The leading version token of `s` ("2.26.1" or "v2.26.1-desktop" -> "2.26.1"...).
fn first_version(s: &str) -> Option<String> {
    let token = s.trim().trim_start_matches('v');
    let version: String = token
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ',')
        .collect();
    version
        .starts_with(|c: char| c.is_ascii_digit())
        .then_some(version)
}

/// Not private (RFC 1918), shared (CGNAT, RFC 6598), loopback, link-local,
/// unspecified or multicast.
pub fn is_public_ipv4(addr: &str) -> bool {
    let Ok(ip) = addr.parse::<Ipv4Addr>() else {
        return false;
    };
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b);
    !(ip.is_private()
        || shared
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "os_id=ubuntu
os_version=24.04
os_codename=noble
os_name=Ubuntu 24.04.1 LTS
kernel=6.8.0-45-generic
arch=x86_64
cpus=2
mem_kb=2014464
swap_kb=0
root_free_kb=35651584
hostname=vps-1
ipv4=10.0.0.5/24 203.0.113.42/24 
user=root
sudo=root
init=systemd
docker=Docker version 27.3.1, build ce12230
compose=2.29.7
nginx=nginx version: nginx/1.24.0 (Ubuntu)
ufw=ufw 0.36.2
docker_package=docker-ce
sshd_ports=22 2222 
time_sync=systemd-timesyncd
";

    #[test]
    fn parses_a_typical_ubuntu_host() {
        let f = parse(SAMPLE).unwrap();
        assert_eq!(f.os_id, "ubuntu");
        assert_eq!(f.os_codename, "noble");
        assert_eq!(f.cpus, 2);
        assert_eq!(f.memory_mib, 1967);
        assert_eq!(f.swap_mib, 0);
        assert_eq!(f.root_disk_free_mib, 34816);
        assert_eq!(f.ipv4_addresses, ["10.0.0.5", "203.0.113.42"]);
        assert_eq!(f.public_ipv4.as_deref(), Some("203.0.113.42"));
        assert_eq!(f.sudo, SudoAccess::Root);
        assert_eq!(f.docker.as_deref(), Some("27.3.1"));
        assert_eq!(f.compose_v2.as_deref(), Some("2.29.7"));
        assert_eq!(f.nginx.as_deref(), Some("1.24.0"));
        assert_eq!(f.ufw.as_deref(), Some("0.36.2"));
        assert_eq!(f.docker_package.as_deref(), Some("docker-ce"));
        assert_eq!(f.sshd_ports, [22, 2222]);
        assert_eq!(f.time_sync.as_deref(), Some("systemd-timesyncd"));
    }

    #[test]
    fn missing_tools_are_none() {
        let minimal: String = SAMPLE
            .lines()
            .filter(|l| {
                ![
                    "docker",
                    "compose=",
                    "nginx=",
                    "ufw=",
                    "sshd_ports=",
                    "time_sync=",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let f = parse(&format!("{minimal}time_sync=\n")).unwrap();
        assert_eq!(
            (f.docker, f.compose_v2, f.nginx, f.ufw),
            (None, None, None, None)
        );
        assert_eq!((f.docker_package, f.time_sync), (None, None));
        assert!(f.sshd_ports.is_empty());
        // Docker without the compose plugin prints nothing for compose.
        let f = parse(&format!("{minimal}compose=\n")).unwrap();
        assert_eq!(f.compose_v2, None);
    }

    #[test]
    fn the_distributions_compose_v2_package_by_release() {
        let cases = [
            ("ubuntu", "22.04", Some("docker-compose-v2")),
            ("ubuntu", "24.04", Some("docker-compose-v2")),
            ("debian", "13", Some("docker-compose")),
            // Debian 12's docker-compose is compose v1.
            ("debian", "12", None),
            ("ubuntu", "20.04", None),
            ("debian", "", None),
            ("centos", "9", None),
        ];
        for (os_id, os_version, expected) in cases {
            let facts = SAMPLE
                .replace("os_id=ubuntu", &format!("os_id={os_id}"))
                .replace("os_version=24.04", &format!("os_version={os_version}"));
            let f = parse(&facts).unwrap();
            assert_eq!(f.distro_compose_v2, expected, "{os_id} {os_version}");
        }
    }

    /// What /etc/os-release says reaches playbooks (apt sources, the URL in
    /// a root command) only when it is a plain word: anything else, a
    /// command substitution, quotes, spaces, is left out.
    #[test]
    fn os_release_words_are_plain_or_empty() {
        for (line, id, version, codename) in [
            ("os_codename=noble", "ubuntu", "24.04", "noble"),
            ("os_codename=", "ubuntu", "24.04", ""),
            ("os_codename=noble$(touch /tmp/x)", "ubuntu", "24.04", ""),
            ("os_codename=noble;id", "ubuntu", "24.04", ""),
            ("os_codename=kali-rolling", "ubuntu", "24.04", ""),
            ("os_codename=Noble", "ubuntu", "24.04", ""),
            ("os_codename=noble `id`", "ubuntu", "24.04", ""),
            (
                "os_id=opensuse-tumbleweed",
                "opensuse-tumbleweed",
                "24.04",
                "noble",
            ),
            ("os_id=ubuntu'", "", "24.04", "noble"),
            ("os_version=24.04\"", "ubuntu", "", "noble"),
        ] {
            let key = line.split('=').next().unwrap();
            let facts: String = SAMPLE
                .lines()
                .map(|l| {
                    if l.starts_with(&format!("{key}=")) {
                        line
                    } else {
                        l
                    }
                })
                .map(|l| format!("{l}\n"))
                .collect();
            let f = parse(&facts).unwrap();
            assert_eq!(
                (
                    f.os_id.as_str(),
                    f.os_version.as_str(),
                    f.os_codename.as_str()
                ),
                (id, version, codename),
                "{line}"
            );
        }
        let f = parse(&SAMPLE.replace("os_id=ubuntu", "os_id=ubuntu$(id)")).unwrap();
        assert_eq!(f.distro_compose_v2, None);
    }

    /// The default TLS server refuses handshakes only where nginx can: the
    /// version installed decides, else the distribution's (a fresh host).
    #[test]
    fn nginx_refuses_handshakes_from_1_19_4_installed_or_shipped() {
        let facts = |os_id: &str, os_version: &str, nginx: Option<&str>| {
            let text = SAMPLE
                .replace("os_id=ubuntu", &format!("os_id={os_id}"))
                .replace("os_version=24.04", &format!("os_version={os_version}"));
            let text = match nginx {
                Some(v) => text.replace("nginx/1.24.0", &format!("nginx/{v}")),
                None => text.replace("nginx=nginx version: nginx/1.24.0 (Ubuntu)\n", ""),
            };
            parse(&text).unwrap().nginx_reject_handshake
        };
        for (os_id, os_version, rejects) in [
            ("ubuntu", "22.04", false),
            ("ubuntu", "24.04", true),
            ("debian", "12", true),
            ("debian", "13", true),
            ("centos", "9", true),
        ] {
            assert_eq!(
                facts(os_id, os_version, None),
                rejects,
                "{os_id} {os_version}"
            );
        }
        // What runs wins over what the distribution ships.
        assert!(facts("ubuntu", "22.04", Some("1.26.2")));
        assert!(!facts("debian", "13", Some("1.18.0")));
        assert!(facts("ubuntu", "22.04", Some("1.19.4")));
        assert!(!facts("ubuntu", "24.04", Some("1.19.3")));
    }

    /// `sshd -V` (9.2: "OpenSSH_9.2, OpenSSL ..."), or an sshd without -V
    /// whose usage names its release after the portable suffix, picks the
    /// algorithms; without sshd, the distribution's release does.
    #[test]
    fn sshds_release_chooses_its_algorithms() {
        let with = |sshd: &str| parse(&format!("{SAMPLE}{sshd}")).unwrap();
        let f = with("sshd=OpenSSH_9.2, OpenSSL 3.0.19 27 Jan 2026\n");
        assert_eq!(f.sshd_version.as_deref(), Some("9.2"));
        let f = with("sshd=OpenSSH_8.9p1 Ubuntu-3ubuntu0.10, OpenSSL 3.0.2 15 Mar 2022\n");
        assert_eq!(f.sshd_version.as_deref(), Some("8.9"));
        assert_eq!(f.sshd_algorithms, SshdAlgorithms::for_openssh(Some("8.9")));
        let f = with("sshd=OpenSSH_10.0p2 Debian-7, OpenSSL 3.5.1 1 Jul 2025\n");
        assert_eq!(f.sshd_algorithms.kex[0], "mlkem768x25519-sha256");
        // No sshd answer: Ubuntu 24.04 ships 9.6.
        let f = with("sshd=OpenSSH_\n");
        assert_eq!(f.sshd_version, None);
        assert_eq!(f.sshd_algorithms, SshdAlgorithms::for_openssh(Some("9.6")));
        for (os_id, os_version, shipped) in [
            ("ubuntu", "22.04", "8.9"),
            ("ubuntu", "24.04", "9.6"),
            ("debian", "12", "9.2"),
            ("debian", "13", "10.0"),
        ] {
            let facts = SAMPLE
                .replace("os_id=ubuntu", &format!("os_id={os_id}"))
                .replace("os_version=24.04", &format!("os_version={os_version}"));
            assert_eq!(
                parse(&facts).unwrap().sshd_algorithms,
                SshdAlgorithms::for_openssh(Some(shipped)),
                "{os_id} {os_version}"
            );
        }
    }

    /// The probe asks this machine's real sshd.
    #[test]
    fn the_probe_reads_the_local_sshds_release() {
        let out = std::process::Command::new("sh")
            .args(["-c", PROBE_SCRIPT])
            .output()
            .unwrap();
        let f = parse(&String::from_utf8_lossy(&out.stdout)).unwrap();
        let said = std::process::Command::new("/usr/sbin/sshd")
            .arg("-V")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&said.stderr);
        let release = f.sshd_version.expect("this machine has sshd (tests/setup)");
        assert!(said.starts_with(&format!("OpenSSH_{release}")), "{said}");
    }

    #[test]
    fn versions_compare_by_number() {
        assert!(version_at_least("1.19.4", &[1, 19, 4]));
        assert!(version_at_least("1.20", &[1, 19, 4]));
        assert!(version_at_least("1.100.0", &[1, 25, 1]));
        assert!(!version_at_least("1.9.15", &[1, 19, 4]));
        assert!(!version_at_least("1.18.0", &[1, 19, 4]));
        assert!(!version_at_least("", &[1]));
    }

    #[test]
    fn garbage_is_an_error_not_zeroes() {
        assert!(parse("hello\n").is_err());
        assert!(parse(&SAMPLE.replace("cpus=2", "cpus=two"))
            .unwrap_err()
            .contains("cpus"));
    }

    #[test]
    fn public_address_detection() {
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
        ] {
            assert!(!is_public_ipv4(private), "{private}");
        }
        for public in [
            "203.0.113.42",
            "198.51.100.15",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert!(is_public_ipv4(public), "{public}");
        }
        assert!(!is_public_ipv4("not-an-ip"));
    }

    #[test]
    fn versions_are_extracted() {
        assert_eq!(
            first_version("v2.26.1-desktop.1").as_deref(),
            Some("2.26.1-desktop.1")
        );
        assert_eq!(
            first_version("docker: 'compose' is not a docker command."),
            None
        );
        assert_eq!(
            version_after(
                "Docker version 26.1.5+dfsg1, build a72d7cd",
                "Docker version "
            )
            .as_deref(),
            Some("26.1.5+dfsg1")
        );
    }
}
