//! `vpsup logs [SERVICE...] [-f] [--since TIME] [--tail N] [--grep TEXT]`:
//! the app's compose logs from every host, streamed as they come, each line
//! prefixed with its host when there are several. `--grep` keeps the lines
//! that hold TEXT (plain text, case-sensitive), filtered on this side.
//! With `-f` it follows until Ctrl-C, which stops `docker compose logs` on
//! every host (`compose_cli::until_stdin_closes`) and ends vpsup with 0.
//!
//! On each host: read how the current release runs and which slot serves,
//! then one attached script: `docker compose logs` in the app's project and,
//! for the site services, in the serving slot's (`switch::Placement`); both
//! at once when following.

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::exec::app_name;
use crate::deploy::compose_cli::{logs_script, LogsQuery};
use crate::deploy::current::Current;
use crate::exit;
use crate::fleet::{self, Connection, Failures, HostJob, HostResult, Turn};
use crate::settings::Settings;
use crate::transport::ssh::Attach;
use crate::transport::{ExecRequest, OutputStream};

/// Output cut into whole lines: each shown with `prefix` (the host, when
/// there are several), and of stdout only those holding `grep` (what
/// compose says on stderr is always shown).
#[derive(Debug, Default)]
pub struct Lines {
    prefix: Option<String>,
    grep: Option<String>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Lines {
    pub fn new(prefix: Option<String>, grep: Option<String>) -> Lines {
        Lines {
            prefix,
            grep,
            ..Lines::default()
        }
    }

    /// The lines `data` completes, ready to show.
    pub fn push(&mut self, stream: OutputStream, data: &[u8]) -> Vec<(OutputStream, String)> {
        let buf = match stream {
            OutputStream::Stdout => &mut self.stdout,
            OutputStream::Stderr => &mut self.stderr,
        };
        buf.extend_from_slice(data);
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = buf.drain(..=end).collect();
        String::from_utf8_lossy(&complete)
            .lines()
            .filter_map(|line| self.show(stream, line))
            .collect()
    }

    /// What is left without a newline at the end.
    pub fn finish(&mut self) -> Vec<(OutputStream, String)> {
        let mut shown = Vec::new();
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let rest = match stream {
                OutputStream::Stdout => std::mem::take(&mut self.stdout),
                OutputStream::Stderr => std::mem::take(&mut self.stderr),
            };
            if !rest.is_empty() {
                shown.extend(self.show(stream, &String::from_utf8_lossy(&rest)));
            }
        }
        shown
    }

    fn show(&self, stream: OutputStream, line: &str) -> Option<(OutputStream, String)> {
        if stream == OutputStream::Stdout
            && self
                .grep
                .as_ref()
                .is_some_and(|g| !line.contains(g.as_str()))
        {
            return None;
        }
        let line = match &self.prefix {
            Some(host) => format!("{host} | {line}"),
            None => line.to_string(),
        };
        Some((stream, line))
    }
}

fn print(lines: Vec<(OutputStream, String)>) {
    for (stream, line) in lines {
        // A closed stdout (`| head`) is no reason to fail.
        let _ = match stream {
            OutputStream::Stdout => writeln!(std::io::stdout().lock(), "{line}"),
            OutputStream::Stderr => writeln!(std::io::stderr().lock(), "{line}"),
        };
    }
}

struct ShowLogs<'a> {
    app: &'a str,
    query: LogsQuery,
    grep: Option<String>,
    /// Lines are prefixed with the host.
    several: bool,
    /// With `-f`: turns true on Ctrl-C.
    stop: Option<watch::Receiver<bool>>,
}

#[derive(Debug, Default)]
struct HostLogs {
    host: String,
    error: Option<String>,
}

impl HostResult for HostLogs {
    fn set_error(&mut self, error: String) {
        self.error = Some(error);
    }
    fn failed(&self) -> bool {
        self.error.is_some()
    }
}

impl HostJob for ShowLogs<'_> {
    type Report = HostLogs;

    fn begin(&self, turn: &Turn<'_>) -> ControlFlow<HostLogs, HostLogs> {
        ControlFlow::Continue(HostLogs {
            host: turn.target.name.clone(),
            error: None,
        })
    }

    async fn on_host(&self, turn: &Turn<'_>, connection: &Connection, report: &mut HostLogs) {
        if let Err(e) = self.show(turn, connection).await {
            report.error = Some(e);
        }
    }

    /// Said at once: the other hosts' logs may go on for long (`-f`).
    async fn end(&self, _turn: &Turn<'_>, report: &mut HostLogs) {
        if let Some(error) = &report.error {
            eprintln!("vpsup: {}: {error}", report.host);
        }
    }
}

impl ShowLogs<'_> {
    async fn show(&self, turn: &Turn<'_>, connection: &Connection) -> Result<(), String> {
        let transport = &connection.transport;
        let current = Current::read(transport, self.app)
            .await
            .map_err(|e| e.to_string())?;
        let script = logs_script(&current.stacks_for(&self.query.services), &self.query);
        let prefix = self.several.then(|| turn.target.name.clone());
        let lines = Arc::new(Mutex::new(Lines::new(prefix, self.grep.clone())));
        let sink = {
            let lines = lines.clone();
            Arc::new(move |stream: OutputStream, data: &[u8]| {
                if let Ok(mut lines) = lines.lock() {
                    print(lines.push(stream, data));
                }
            })
        };
        let attach = Attach {
            pty: None,
            input: None,
            stop: self.stop.clone(),
            output: sink,
            resized: None,
        };
        let out = transport
            .attach(&ExecRequest::new(script).become_root(true), attach)
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(mut lines) = lines.lock() {
            print(lines.finish());
        }
        let stopped = self.stop.as_ref().is_some_and(|s| *s.borrow());
        if out.success() || stopped {
            Ok(())
        } else {
            // What it said on stderr has been shown already.
            Err(format!(
                "docker compose logs ended with {}",
                out.status_text()
            ))
        }
    }
}

pub async fn run(settings: &Settings, query: LogsQuery, grep: Option<String>) -> exit::Result<()> {
    let app = app_name(settings, "vpsup logs")?;
    let targets = settings.targets(None)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let follow = query.follow;
    let job = ShowLogs {
        app,
        query,
        grep,
        several: targets.len() > 1,
        stop: follow.then_some(stop_rx),
    };
    // Ctrl-C while following stops every host's `logs --follow`; vpsup then
    // ends when they have.
    let interrupt = async {
        if follow && tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        }
        std::future::pending::<()>().await
    };
    let reports = tokio::select! {
        reports = fleet::for_each_host(settings, &targets, &job) => reports,
        () = interrupt => unreachable!("never ends"),
    };
    if let Some(failures) = Failures::of(&reports) {
        return Err(exit::Error::failed(format!(
            "logs could not be read from {failures}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use OutputStream::{Stderr, Stdout};

    fn texts(shown: Vec<(OutputStream, String)>) -> Vec<String> {
        shown.into_iter().map(|(_, l)| l).collect()
    }

    #[test]
    fn lines_are_whole_prefixed_and_kept_when_they_hold_the_text() {
        let mut lines = Lines::new(Some("web1".into()), Some("GET".into()));
        assert!(
            lines
                .push(Stdout, b"app-1  | GET /a 200\napp-1  | sta")
                .len()
                == 1
        );
        assert_eq!(
            texts(lines.push(Stdout, b"rted\napp-1  | GET /b 404\n")),
            ["web1 | app-1  | GET /b 404"]
        );
        // compose's own complaints are always shown.
        assert_eq!(
            texts(lines.push(Stderr, b"no such service: x\n")),
            ["web1 | no such service: x"]
        );
        assert_eq!(
            texts(lines.push(Stdout, b"app-1  | GET /c")),
            Vec::<String>::new()
        );
        assert_eq!(texts(lines.finish()), ["web1 | app-1  | GET /c"]);
    }

    #[test]
    fn one_host_needs_no_prefix_and_no_grep_keeps_everything() {
        let mut lines = Lines::new(None, None);
        assert_eq!(texts(lines.push(Stdout, b"a\nb\n")), ["a", "b"]);
    }
}
