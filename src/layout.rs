//! The host layout: every path and unit name vpsup uses on a host, defined
//! once. Rust code uses these constants; playbooks and templates get them as
//! variables (`vars`), so a path is spelled in one place only.
//!
//! ```text
//! /etc/vpsup/acme/                  the certificate store ([acme] store's default)
//! /var/lib/vpsup/acme/              the HTTP-01 webroot nginx serves ([acme] webroot's default)
//! /usr/local/bin/vpsup              vpsup itself, for the renewal timer
//! /usr/local/lib/vpsup/             init's helper scripts (sshd-apply, -arm, -revert)
//! /etc/vpsup/default-tls/           the default HTTPS server's throwaway certificate (nginx < 1.19.4)
//! /srv/vpsup/<app>/                 an app's releases, data and secrets (deploy)
//! /etc/ssh/sshd_config.d/00-vpsup.conf   the SSH hardening drop-in
//! /etc/ssh/ssh_host_ed25519_key     the one host key sshd offers
//! vpsup-ssh                         the group allowed to log in over SSH
//! /var/lib/vpsup/sshd-revert/       the saved drop-in while an SSH change awaits confirmation
//! /run/vpsup-sshd.lock              one sshd change or revert at a time
//! vpsup-renew-certs.timer/.service  daily certificate renewal
//! vpsup-backup@<app>.timer          an app's backups ([backup] schedule)
//! vpsup-backup-verify@<app>.timer   its restore drills ([backup] verify_schedule)
//! vpsup-sshd-revert.timer/.service  the transient revert timer init arms
//! vpsup-sshd-boot-revert.service    the revert, at boot
//! /etc/vpsup/backup/<app>.toml      an app's backup settings, for its timers (0600)
//! /etc/vpsup/backup/<app>/          its repository's env, password, ssh key, known_hosts (0600)
//! /var/lib/vpsup/backup/<app>/      what its backups and drills left (last-*.json, history)
//! /srv/vpsup/<app>/backup.lock      one backup, restore or drill of an app at a time
//! vpsup-watch.timer/.service        the host's own checks and alerts, every few minutes
//! /etc/vpsup/watch/<app>.toml       an app's checks and alert channels, for the timer (0600)
//! /etc/vpsup/watch/<app>/           its channels' secrets (0600)
//! /var/lib/vpsup/watch/<app>.json   what its checks found and told (open problems, trends)
//! ```

use serde_json::{json, Map, Value};

/// The certificate store (the default of `[acme] store`).
pub const ACME_STORE: &str = "/etc/vpsup/acme";
/// The HTTP-01 webroot init's nginx default server serves (the default of
/// `[acme] webroot`).
pub const ACME_WEBROOT: &str = "/var/lib/vpsup/acme";
/// The throwaway self-signed certificate and key (0600) of nginx's default
/// HTTPS server where nginx cannot refuse the handshake (before 1.19.4):
/// made once by init, never changed.
pub const DEFAULT_TLS_CERT: &str = "/etc/vpsup/default-tls/cert.pem";
pub const DEFAULT_TLS_KEY: &str = "/etc/vpsup/default-tls/key.pem";
/// vpsup on the host, run by the renewal timer.
pub const HOST_BINARY: &str = "/usr/local/bin/vpsup";
/// init's helper scripts.
pub const HELPERS_DIR: &str = "/usr/local/lib/vpsup";
/// Each app's directory is `<APPS_DIR>/<app>`.
pub const APPS_DIR: &str = "/srv/vpsup";
/// The SSH hardening drop-in; `00-` sorts it before cloud-init's.
pub const SSHD_DROPIN: &str = "/etc/ssh/sshd_config.d/00-vpsup.conf";
/// The one host key the hardened sshd uses (init makes it if missing).
pub const SSHD_HOST_KEY: &str = "/etc/ssh/ssh_host_ed25519_key";
/// The group whose members may log in over SSH (`AllowGroups`): the admin
/// and `[init] ssh_users`.
pub const SSH_GROUP: &str = "vpsup-ssh";
/// Present while an SSH change awaits the admin's login (holds the previous drop-in).
pub const SSHD_REVERT_DIR: &str = "/var/lib/vpsup/sshd-revert";
/// Serializes arming, reverting and confirming an SSH change.
pub const SSHD_LOCK: &str = "/run/vpsup-sshd.lock";
/// The transient unit `systemd-run` makes for the revert timer (a `.timer`
/// and a `.service` of this name).
pub const SSHD_REVERT_UNIT: &str = "vpsup-sshd-revert";
/// Reverts an unconfirmed SSH change at boot (the timer does not survive one).
pub const SSHD_BOOT_REVERT_SERVICE: &str = "vpsup-sshd-boot-revert.service";
/// The daily certificate renewal, and the service it starts.
pub const RENEW_TIMER: &str = "vpsup-renew-certs.timer";
pub const RENEW_SERVICE: &str = "vpsup-renew-certs.service";
/// Each app's backups and restore drills: template services
/// (`vpsup-backup@.service`, `vpsup-backup-verify@.service`) started by one
/// timer per app and run (`vpsup-backup@<app>.timer`).
pub const BACKUP_UNIT: &str = "vpsup-backup";
pub const BACKUP_VERIFY_UNIT: &str = "vpsup-backup-verify";

/// Each app's backup settings (`<app>.toml`) and repository files (`<app>/`).
pub const BACKUP_SETTINGS_DIR: &str = "/etc/vpsup/backup";
/// Each app's backup state (`<app>/last-backup.json`, ...).
pub const BACKUP_STATE_DIR: &str = "/var/lib/vpsup/backup";

/// The host's own checks (`vpsup watch --local`), every few minutes.
pub const WATCH_TIMER: &str = "vpsup-watch.timer";
pub const WATCH_SERVICE: &str = "vpsup-watch.service";
/// Each app's checks and alert channels (`<app>.toml`) and their secrets (`<app>/`).
pub const WATCH_SETTINGS_DIR: &str = "/etc/vpsup/watch";
/// Each app's watch state (`<app>.json`).
pub const WATCH_STATE_DIR: &str = "/var/lib/vpsup/watch";
/// Where a watch state goes while WATCH_STATE_DIR cannot be written (a full
/// disk): memory, so the run after still knows what it told.
pub const WATCH_STATE_FALLBACK_DIR: &str = "/run/vpsup/watch";
/// Where watch runs reach Docker's API.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Where watch runs keep Docker's slow answers (its data directory, the
/// build cache's size: its `/info` and `/system/df` JSON) for an hour; lost
/// at reboot, asked again.
pub const WATCH_DOCKER_CACHE: &str = "/run/vpsup/watch/docker-api";

/// The layout as playbook and template variables.
pub fn vars() -> Map<String, Value> {
    [
        ("acme_store", ACME_STORE),
        ("acme_webroot", ACME_WEBROOT),
        ("default_tls_cert", DEFAULT_TLS_CERT),
        ("default_tls_key", DEFAULT_TLS_KEY),
        ("host_binary_path", HOST_BINARY),
        ("vpsup_lib", HELPERS_DIR),
        ("apps_dir", APPS_DIR),
        ("sshd_dropin", SSHD_DROPIN),
        ("sshd_host_key", SSHD_HOST_KEY),
        ("ssh_group", SSH_GROUP),
        ("sshd_revert_dir", SSHD_REVERT_DIR),
        ("sshd_lock", SSHD_LOCK),
        ("sshd_revert_unit", SSHD_REVERT_UNIT),
        ("sshd_boot_revert_service", SSHD_BOOT_REVERT_SERVICE),
        ("renew_timer", RENEW_TIMER),
        ("renew_service", RENEW_SERVICE),
        ("backup_settings_dir", BACKUP_SETTINGS_DIR),
        ("backup_state_dir", BACKUP_STATE_DIR),
        ("backup_unit", BACKUP_UNIT),
        ("backup_verify_unit", BACKUP_VERIFY_UNIT),
        ("watch_timer", WATCH_TIMER),
        ("watch_service", WATCH_SERVICE),
        ("watch_settings_dir", WATCH_SETTINGS_DIR),
        ("watch_state_dir", WATCH_STATE_DIR),
        ("watch_state_fallback_dir", WATCH_STATE_FALLBACK_DIR),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), json!(value)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_absolute_and_every_unit_is_vpsups() {
        for (name, value) in vars() {
            let value = value.as_str().unwrap().to_string();
            let named = ["_unit", "_service", "_timer", "_group"];
            if named.iter().any(|suffix| name.ends_with(suffix)) {
                assert!(value.starts_with("vpsup-"), "{name} = {value}");
            } else {
                assert!(value.starts_with('/'), "{name} = {value}");
            }
        }
    }

    /// The facts probe spells the timer and the binary out in its shell text;
    /// they must be the ones init installs.
    #[test]
    fn the_facts_probe_looks_for_the_renewal_timer_and_binary_init_installs() {
        let probe = crate::facts::PROBE_SCRIPT;
        assert!(
            probe.contains(&format!(
                "/etc/systemd/system/timers.target.wants/{RENEW_TIMER} ] && [ -x {HOST_BINARY} ]"
            )),
            "{probe}"
        );
    }
}
