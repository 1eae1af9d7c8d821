//! Ubuntu's own behaviours, on the Debian 13 VM (Ubuntu images cannot be
//! fetched here; issue 14): what an Ubuntu 22.10+ cloud image does that a
//! stock Debian does not, set up as root before `vpsup init` runs:
//! - sshd socket-activated: `ssh.socket` holds the port, and a generator
//!   derives it from sshd_config at every daemon-reload (Ubuntu's
//!   sshd-socket-generator; Debian 13 ships ssh.socket, not the generator,
//!   so a shell stand-in does the same);
//! - ufw installed but inactive;
//! - unattended-upgrades at work right after boot, holding the dpkg lock,
//!   and installing needrestart (which must never prompt or restart sshd in
//!   the middle of init);
//! - a default user with the operator's key and passwordless sudo.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

/// The name of the image's default user (`ubuntu` on Ubuntu's images).
pub const DEFAULT_USER: &str = "ubuntu";

/// A stand-in for Ubuntu's sshd-socket-generator: ssh.socket listens on the
/// ports sshd's configuration names (all addresses), read at daemon-reload.
const GENERATOR: &str = r#"#!/bin/sh
# Test stand-in for Ubuntu's sshd-socket-generator (vpsup tests/vm/ubuntu_like.rs).
# sshd -T refuses to run without its privilege separation directory, which
# goes with ssh.service (systemctl disable reloads, so generators run, then).
mkdir -p /run/sshd
ports=$(/usr/sbin/sshd -T 2>/dev/null | awk '$1 == "port" { print $2 }')
[ -n "$ports" ] || exit 0
mkdir -p "$1/ssh.socket.d"
{
  echo '[Socket]'
  echo 'ListenStream='
  for port in $ports; do echo "ListenStream=$port"; done
} > "$1/ssh.socket.d/addresses.conf"
"#;

/// Makes the freshly booted VM behave like an Ubuntu cloud image (all but
/// the upgrades, which `upgrades_start` begins right before init).
pub fn make(vm: &TestVm, operator_key: &Path) {
    let public_key = std::fs::read_to_string(operator_key.with_extension("pub")).unwrap();
    vm.root(&format!(
        "set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q ufw >/dev/null
ufw status | grep -qx 'Status: inactive'
useradd -m -s /bin/bash {user}
install -d -m 700 -o {user} -g {user} /home/{user}/.ssh
echo '{key}' > /home/{user}/.ssh/authorized_keys
chown {user}: /home/{user}/.ssh/authorized_keys
echo '{user} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users
chmod 440 /etc/sudoers.d/90-cloud-init-users
cat > /usr/lib/systemd/system-generators/sshd-socket-generator <<'GENERATOR'
{GENERATOR}GENERATOR
chmod 755 /usr/lib/systemd/system-generators/sshd-socket-generator
# From outside this session, which the switch may end.
systemd-run --unit ubuntu-like-ssh --quiet sh -c 'systemctl daemon-reload && systemctl disable --now ssh.service && systemctl enable --now ssh.socket'",
        user = DEFAULT_USER,
        key = public_key.trim(),
    ));
    // The next login is accepted by the socket, which starts sshd.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = vm.ssh(
            "root",
            &vm.root_key(),
            "systemctl is-active ssh.socket; systemctl is-enabled ssh.service; cat /run/systemd/generator/ssh.socket.d/addresses.conf",
            &[],
        );
        let seen = text(&out);
        if out.status.success() && seen.starts_with("active\ndisabled\n") {
            assert!(seen.contains("ListenStream=22\n"), "{seen}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sshd is not socket-activated: {seen}"
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// unattended-upgrades' morning run, as on a VPS booted minutes ago: apt
/// installs needrestart (and unattended-upgrades) in the background, holding
/// the dpkg lock while init starts.
pub fn upgrades_start(vm: &TestVm) {
    vm.root(
        "systemd-run --unit ubuntu-like-upgrades --quiet --setenv DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 needrestart unattended-upgrades",
    );
}

/// Waits for the upgrades begun by `upgrades_start` to end; needrestart is
/// installed then (so init's next apt run meets its hook).
pub fn upgrades_done(vm: &TestVm) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let state = vm.root(
            "systemctl is-active ubuntu-like-upgrades || true; dpkg-query -W -f '${Status}\\n' needrestart 2>/dev/null || true",
        );
        if !state.starts_with("active") && !state.starts_with("activating") {
            assert!(state.contains("install ok installed"), "{state}");
            return;
        }
        assert!(Instant::now() < deadline, "the upgrades still run: {state}");
        std::thread::sleep(Duration::from_secs(10));
    }
}

/// After init moved SSH to `port`: the socket carries the new port (the
/// generator re-read sshd_config), ssh.service is still socket-activated.
pub fn ssh_socket_moved(vm: &TestVm, port: u16, key: &Path) {
    let out = vm.ssh_on(
        port,
        "deploy",
        key,
        // (sudo: this image has no D-Bus for a user's systemctl.)
        "sudo systemctl is-active ssh.socket; sudo systemctl show -p Listen --value ssh.socket",
        &[],
    );
    let seen = text(&out);
    assert!(out.status.success(), "{seen}");
    let mut lines = seen.lines();
    assert_eq!(lines.next(), Some("active"), "{seen}");
    let listen = lines.next().unwrap_or_default();
    assert!(
        listen.contains(&format!(":{port} ")) && !listen.contains(":22 "),
        "ssh.socket listens on {listen:?}, expected port {port} alone"
    );
}

/// `vpsup deploy` on the Ubuntu-like host: the test stack's frontend alone
/// (built on the host, no site), running and healthy; a second deploy
/// changes nothing.
pub fn deploys(vm: &TestVm, op: &Operator, port: u16, key: &Path) {
    let project = op.project.path();
    let stack = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/stack");
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(stack.join("frontend"))
        .arg(project)
        .status()
        .unwrap();
    assert!(copy.success());
    std::fs::copy("/bin/busybox", project.join("frontend/busybox"))
        .expect("the static busybox (tests/setup installs busybox-static)");
    std::fs::write(
        project.join("compose.yml"),
        "services:\n  frontend:\n    build: ./frontend\n    stop_grace_period: 1s\n    healthcheck:\n      test: [\"CMD\", \"/bin/busybox\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8080/\"]\n      start_period: 120s\n      start_interval: 1s\n      interval: 60s\n      retries: 3\n",
    )
    .unwrap();
    let config_path = project.join("vpsup.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, format!("{config}\n[app]\nname = \"ubu\"\n")).unwrap();

    let out = op.vpsup(&["deploy", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let first = json(&out)["hosts"][0].clone();
    assert_eq!(first["changed"], true, "{first}");
    let out = vm.ssh_on(
        port,
        "deploy",
        key,
        "docker ps --filter label=com.docker.compose.project=vpsup-ubu --format '{{.Names}} {{.Status}}'",
        &[],
    );
    let running = text(&out);
    assert!(
        running.contains("vpsup-ubu-frontend-1 ") && running.contains("(healthy)"),
        "{running}"
    );
    let out = op.vpsup(&["deploy", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let again = json(&out)["hosts"][0].clone();
    assert_eq!(
        (again["changed"].clone(), again["uploaded"].clone()),
        (false.into(), 0.into()),
        "{again}"
    );
}
