//! sslyze (PyPI `sslyze`), the auditor's view of a TLS server: what its
//! check against Mozilla's "intermediate" configuration finds. tests/setup
//! installs it into a venv under /var/cache/vpsup-test.

use std::process::Command;

pub const SSLYZE: &str = "/var/cache/vpsup-test/sslyze-6.3.1/venv/bin/sslyze";

/// sslyze's checks of the certificate itself, which a test's certificate
/// (self-signed in tier 1, the test CA's on the VM) does not pass.
pub const TEST_CERTIFICATE_CHECKS: [&str; 2] = [
    "certificate_path_validation",
    "maximum_certificate_lifespan",
];

/// What keeps the server on `127.0.0.1:port`, asked for `name` (SNI), from
/// complying with Mozilla's intermediate configuration: each check's name
/// (`tls_curves`, `certificate_path_validation`, ...) with sslyze's words.
/// Empty when it complies. Panics when sslyze did not get to the check (no
/// connection, no report), so an empty list is never a scan that did not run.
pub fn mozilla_intermediate_problems(port: u16, name: &str) -> Vec<(String, String)> {
    let out = Command::new(SSLYZE)
        .arg("--mozilla_config=intermediate")
        .arg(format!("{name}:{port}{{127.0.0.1}}"))
        .output()
        .expect("sslyze (tests/setup installs it)");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    problems_in(&report, &format!("{name}:{port}")).unwrap_or_else(|| {
        panic!(
            "sslyze did not check {name}:{port}:\n{report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The compliance section's verdict for `target`: `None` when the report has
/// none (the scan failed), else the problems it lists (empty: compliant).
fn problems_in(report: &str, target: &str) -> Option<Vec<(String, String)>> {
    let (_, section) = report.split_once("COMPLIANCE AGAINST TLS CONFIGURATION")?;
    let mut lines = section
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with(&format!("{target}: ")));
    let verdict = lines.next()?;
    if verdict.ends_with("OK - Compliant.") {
        return Some(Vec::new());
    }
    if !verdict.contains("FAILED - Not compliant.") {
        return None;
    }
    let problems: Vec<(String, String)> = lines
        .map_while(|l| l.strip_prefix("* "))
        .filter_map(|l| l.split_once(": "))
        .map(|(check, words)| (check.to_string(), words.to_string()))
        .collect();
    (!problems.is_empty()).then_some(problems)
}
