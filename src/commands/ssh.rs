//! `vpsup ssh [HOST] [-- CMD...]`: a login shell (or one command) as the
//! user vpsup logs in as, with the settings vpsup resolved for that host
//! (address, port, user, key files, known_hosts).
//!
//! It runs the system's OpenSSH client instead of vpsup's own connection: a
//! shell wants what only a real client gives (the terminal handled as the
//! user set it up, escape sequences such as `~.`, agent and port forwarding
//! as the user's ~/.ssh/config chooses). vpsup's host key policy holds: the
//! client checks the key against vpsup's known_hosts and refuses any other
//! (`StrictHostKeyChecking=yes`); a host not met yet is first met by vpsup
//! itself, which records its key as every command does.

use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::exit;
use crate::fleet;
use crate::settings::Settings;
use crate::transport::known_hosts;
use crate::transport::SshTarget;

/// The `ssh` command line for `target`, running `command` when given (joined
/// by ssh and run by the login shell, as `ssh HOST CMD...` does).
/// `identity_files`: those of the target that exist (ssh warns about others).
pub fn openssh_argv(
    target: &SshTarget,
    identity_files: &[String],
    command: &[String],
) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "ssh".into(),
        "-p".into(),
        target.port.to_string(),
        "-l".into(),
        target.user.clone(),
        "-o".into(),
        format!(
            "UserKnownHostsFile={}",
            config_word(&target.known_hosts.to_string_lossy())
        ),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        format!("ConnectTimeout={}", target.connect_timeout.as_secs().max(1)),
    ];
    if target.identities_only {
        argv.extend(["-o".into(), "IdentitiesOnly=yes".into()]);
    }
    for file in identity_files {
        argv.extend(["-i".into(), file.clone()]);
    }
    argv.push("--".into());
    argv.push(target.host.clone());
    argv.extend(command.iter().cloned());
    argv
}

/// A value for ssh's `-o`, which splits on spaces unless double-quoted.
fn config_word(value: &str) -> String {
    if value.contains(char::is_whitespace) {
        format!("\"{value}\"")
    } else {
        value.to_string()
    }
}

pub async fn run(settings: &Settings, host: Option<&str>, command: &[String]) -> exit::Result<()> {
    let target = settings.one_target(host, "vpsup ssh", ": vpsup ssh HOST")?;
    let ssh = &target.ssh;
    if known_hosts::recorded_algorithms(&ssh.known_hosts, &ssh.host, ssh.port).is_empty() {
        // Met for the first time: vpsup records its key (and says so), so
        // the client then checks it strictly.
        let connection = fleet::connect(settings, &target).await?;
        connection.transport.close().await;
    }
    let identity_files: Vec<String> = ssh
        .identity_files
        .iter()
        .filter(|p| p.exists())
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let argv = openssh_argv(ssh, &identity_files, command);
    // Only returns when ssh could not be started.
    let error = Command::new(&argv[0]).args(&argv[1..]).exec();
    Err(exit::Error::failed(format!(
        "cannot run the OpenSSH client `ssh` ({error}); install it (Debian/Ubuntu: apt install openssh-client)"
    )))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    fn target() -> SshTarget {
        SshTarget {
            host: "203.0.113.42".into(),
            port: 2222,
            user: "deploy".into(),
            identity_files: vec![PathBuf::from("/home/me/.ssh/vps")],
            identities_only: true,
            known_hosts: PathBuf::from("/home/me/my known_hosts"),
            connect_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn the_client_gets_vpsups_settings_and_strict_host_key_checking() {
        let argv = openssh_argv(&target(), &["/home/me/.ssh/vps".into()], &[]);
        assert_eq!(
            argv.join(" "),
            "ssh -p 2222 -l deploy -o UserKnownHostsFile=\"/home/me/my known_hosts\" \
             -o StrictHostKeyChecking=yes -o ConnectTimeout=10 -o IdentitiesOnly=yes \
             -i /home/me/.ssh/vps -- 203.0.113.42"
        );
    }

    #[test]
    fn a_command_follows_the_host() {
        let argv = openssh_argv(&target(), &[], &["uptime".into(), "-p".into()]);
        assert_eq!(argv[argv.len() - 3..], ["203.0.113.42", "uptime", "-p"]);
        assert!(!argv.contains(&"-i".to_string()));
    }
}
