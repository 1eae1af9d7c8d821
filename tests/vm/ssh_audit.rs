//! The auditor's view of a host `vpsup init` hardened (issue 14, finding 1):
//! ssh-audit, run from this machine against the VM's sshd through its
//! forwarded port, finds nothing to fail or warn about (Debian 13's OpenSSH
//! 10.0 has ML-KEM, so the drop-in offers post-quantum key exchanges only),
//! and only the SSH login group gets in.

use std::path::Path;

use crate::support::*;

/// ssh-audit against the VM's sshd on this machine's `port` (forwarded to
/// the port init moved SSH to): 0 failures, 0 warnings, the Ed25519 host key
/// alone. Run it last: its two connections end before authentication, and
/// fail2ban's sshd jail counts those and bans this machine's address for
/// minutes (see the module header of tests/vm.rs).
pub fn ssh_audit_is_clean(port: u16) {
    // Two connections: the key exchange, then the host key's fingerprint.
    let report = ssh_budget::spend(2, || ssh_audit(port));
    eprintln!(
        "ssh-audit on the VM ({}): {} failures, {} warnings; kex {:?}",
        report.json["banner"]["raw"],
        report.failures.len(),
        report.warnings.len(),
        report.offered("kex")
    );
    assert_eq!(report.failures, [], "{:#}", report.json);
    assert_eq!(report.warnings, [], "{:#}", report.json);
    assert_eq!(report.offered("key"), ["ssh-ed25519"], "{:#}", report.json);
    assert_eq!(
        report.offered("kex").first().map(String::as_str),
        Some("mlkem768x25519-sha256"),
        "{:#}",
        report.json
    );
}

/// sshd lets in the members of vpsup-ssh only: `outsider`, a user with a
/// shell and `key` in its authorized_keys but not in the group (like a
/// cloud image's default user), is refused; the admin logs in and is a
/// member. The refused login counts twice toward fail2ban's five (sshd logs
/// the group refusal and the failed key).
pub fn only_the_ssh_group_logs_in(vm: &TestVm, port: u16, key: &Path, outsider: &str) {
    let out = vm.ssh_on(port, outsider, key, "true", &[]);
    assert!(
        !out.status.success(),
        "{outsider} logged in: {}",
        text(&out)
    );
    assert!(text(&out).contains("Permission denied"), "{}", text(&out));
    let out = vm.ssh_on(
        port,
        "deploy",
        key,
        "id -nG; sudo sshd -T | grep -E '^(allowgroups|allowtcpforwarding|allowstreamlocalforwarding|loglevel) '",
        &[],
    );
    let seen = text(&out);
    assert!(out.status.success(), "{seen}");
    assert!(seen.split_whitespace().any(|g| g == "vpsup-ssh"), "{seen}");
    for line in [
        "allowgroups vpsup-ssh",
        "allowtcpforwarding no",
        "allowstreamlocalforwarding no",
        "loglevel VERBOSE",
    ] {
        assert!(
            seen.lines().any(|l| l == line),
            "missing {line:?} in:\n{seen}"
        );
    }
}
