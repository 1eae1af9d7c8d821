//! ssh-audit (PyPI `ssh-audit`), the auditor's view of an SSH server: its
//! failures and warnings, read from its JSON report. tests/setup installs it
//! into a venv under /var/cache/vpsup-test.

use std::process::Command;

use serde_json::Value;

pub const SSH_AUDIT: &str = "/var/cache/vpsup-test/ssh-audit-3.9.0/venv/bin/ssh-audit";

/// One `[fail]` or `[warn]`: the section (`kex`, `key`, `enc` or `mac`),
/// the algorithm and ssh-audit's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub section: String,
    pub algorithm: String,
    pub note: String,
}

#[derive(Debug)]
pub struct SshAuditReport {
    pub failures: Vec<Finding>,
    pub warnings: Vec<Finding>,
    /// The whole report, for assertion messages.
    pub json: Value,
}

impl SshAuditReport {
    /// The algorithms the server offered in `section` (`kex`, `key`, ...), in its order.
    pub fn offered(&self, section: &str) -> Vec<String> {
        self.json[section]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["algorithm"].as_str().map(str::to_string))
            .collect()
    }
}

/// Audits the SSH server on `127.0.0.1:port`. Without the connection rate
/// test (`--skip-rate-test`): it opens dozens of connections, which a
/// hardened host's firewall limit and fail2ban answer by dropping this
/// machine, and it only ever yields information, never a failure or warning.
pub fn ssh_audit(port: u16) -> SshAuditReport {
    let out = Command::new(SSH_AUDIT)
        .args([
            "-j",
            "--skip-rate-test",
            "-t",
            "20",
            "-p",
            &port.to_string(),
            "127.0.0.1",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {SSH_AUDIT} (run tests/setup): {e}"));
    // The exit status says whether there were findings; the report says which.
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ssh-audit printed no JSON report ({e}):\n{}",
            super::describe_output(&out)
        )
    });
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    for section in ["kex", "key", "enc", "mac"] {
        for algorithm in json[section].as_array().into_iter().flatten() {
            let notes = &algorithm["notes"];
            for (level, into) in [("fail", &mut failures), ("warn", &mut warnings)] {
                for note in notes[level].as_array().into_iter().flatten() {
                    into.push(Finding {
                        section: section.to_string(),
                        algorithm: algorithm["algorithm"].as_str().unwrap_or("").to_string(),
                        note: note.as_str().unwrap_or("").to_string(),
                    });
                }
            }
        }
    }
    SshAuditReport {
        failures,
        warnings,
        json,
    }
}
