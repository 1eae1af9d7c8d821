//! `vpsup facts`: connect to each host and report what it is, in one probe.

use std::ops::ControlFlow;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::facts::{self, HostFacts};
use crate::fleet::{self, Connection, Failures, HostJob, HostResult, Turn};
use crate::report::millis;
use crate::settings::{HostTarget, Settings, Verbosity};
use crate::transport::Transport;

#[derive(Debug, Serialize)]
pub struct HostReport {
    pub host: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts: Option<HostFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
}

impl HostReport {
    fn new(target: &HostTarget) -> HostReport {
        HostReport {
            host: target.name.clone(),
            target: target.ssh.describe(),
            facts: None,
            error: None,
            timing: None,
        }
    }
}

/// Where the time went, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Timing {
    pub handshake_ms: u64,
    pub auth_ms: u64,
    pub probe_ms: u64,
    pub total_ms: u64,
    pub round_trips: usize,
}

pub async fn run(settings: &Settings, target: Option<&str>) -> crate::exit::Result<()> {
    let targets = settings.targets(target)?;
    let reports = fleet::for_each_host(settings, &targets, &Probe).await;

    if settings.json {
        #[derive(Serialize)]
        struct Output<'a> {
            hosts: &'a [HostReport],
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&Output { hosts: &reports })?
        );
    } else {
        for report in &reports {
            print_report(report, settings.verbosity);
        }
    }
    if let Some(failures) = Failures::of(&reports) {
        return Err(crate::exit::Error::failed(format!(
            "{failures} could not be probed"
        )));
    }
    Ok(())
}

impl HostResult for HostReport {
    fn set_error(&mut self, error: String) {
        self.error = Some(error);
    }
    fn failed(&self) -> bool {
        self.error.is_some()
    }
}

/// One probe exec per host.
struct Probe;

impl HostJob for Probe {
    type Report = HostReport;

    fn begin(&self, turn: &Turn<'_>) -> ControlFlow<HostReport, HostReport> {
        ControlFlow::Continue(HostReport::new(turn.target))
    }

    async fn on_host(&self, turn: &Turn<'_>, connection: &Connection, report: &mut HostReport) {
        let transport = &connection.transport;
        let probe_started = Instant::now();
        match facts::gather(transport).await.context("gathering facts") {
            Err(e) => report.error = Some(format!("{e:#}")),
            Ok(facts) => {
                report.timing = Some(Timing {
                    handshake_ms: millis(connection.report.handshake),
                    auth_ms: millis(connection.report.auth),
                    probe_ms: millis(probe_started.elapsed()),
                    total_ms: millis(turn.started.elapsed()),
                    round_trips: transport.round_trips(),
                });
                report.facts = Some(facts);
            }
        }
    }
}

fn print_report(report: &HostReport, verbosity: Verbosity) {
    if let Some(error) = &report.error {
        eprintln!("{}: {error}", report.host);
        return;
    }
    println!("{} ({})", report.host, report.target);
    let Some(f) = &report.facts else { return };
    let installed = |v: &Option<String>| v.clone().unwrap_or_else(|| "not installed".to_string());
    let os = if f.os_name.is_empty() {
        format!("{} {}", f.os_id, f.os_version)
    } else {
        f.os_name.clone()
    };
    let rows = [
        (
            "OS",
            format!("{os}  [{} {} {}]", f.os_id, f.os_version, f.os_codename),
        ),
        ("Kernel", format!("{} ({})", f.kernel, f.arch)),
        ("CPUs", f.cpus.to_string()),
        (
            "Memory",
            format!("{} MiB, swap {} MiB", f.memory_mib, f.swap_mib),
        ),
        ("Root disk free", format!("{} MiB", f.root_disk_free_mib)),
        ("Hostname", f.hostname.clone()),
        (
            "Public IPv4",
            f.public_ipv4.clone().unwrap_or_else(|| {
                format!(
                    "none visible (addresses: {})",
                    list_or_none(&f.ipv4_addresses)
                )
            }),
        ),
        ("User", f.user.clone()),
        ("Sudo", f.sudo.describe().to_string()),
        ("Init system", f.init_system.clone()),
        ("Docker", installed(&f.docker)),
        ("Compose v2", installed(&f.compose_v2)),
        ("nginx", installed(&f.nginx)),
        ("ufw", installed(&f.ufw)),
        ("Time sync", installed(&f.time_sync)),
    ];
    for (label, value) in rows {
        println!("  {label:<15} {value}");
    }
    if let (Verbosity::Verbose(_), Some(t)) = (verbosity, &report.timing) {
        println!(
            "  {:<15} {} ms (handshake {} ms, auth {} ms, probe {} ms; {} round trip(s))",
            "Time", t.total_ms, t.handshake_ms, t.auth_ms, t.probe_ms, t.round_trips
        );
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}
