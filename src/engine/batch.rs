//! One exec, many tasks: builds the script that probes and/or changes several
//! tasks at once, and splits its output back per task, in the one section
//! format (`transport::sections`), so no task output can forge a section.

use std::collections::HashMap;

use crate::facts::PROBE_SCRIPT;
use crate::transport::sections::Sections;

pub struct BatchScript {
    sections: Sections,
    body: String,
    count: usize,
}

impl BatchScript {
    pub fn new(sections: Sections) -> BatchScript {
        // The marker appears only as literals in this script (which tasks
        // cannot read: their stdin is /dev/null), never in a variable they could print.
        let body = "vpsup_err=$(mktemp)\ntrap 'rm -f \"$vpsup_err\"' EXIT\n".to_string();
        BatchScript {
            sections,
            body,
            count: 0,
        }
    }

    pub fn sections(&self) -> &Sections {
        &self.sections
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The host facts (see `facts::PROBE_SCRIPT`).
    pub fn facts(&mut self) {
        self.section("facts");
        self.body
            .push_str(&format!("(\n{PROBE_SCRIPT}\n) </dev/null 2>/dev/null\n"));
    }

    /// Task `id`'s probe. Probes only read: their status and stderr are ignored.
    pub fn probe(&mut self, id: usize, snippet: &str) {
        self.section(&format!("probe {id}"));
        if !snippet.trim().is_empty() {
            self.body
                .push_str(&format!("(\n{snippet}\n) </dev/null 2>/dev/null\n"));
        }
    }

    /// Task `id`'s change script, under `set -e`. The first failing task ends the
    /// whole script: later tasks must not run on a host in an unknown state.
    pub fn change(&mut self, id: usize, script: &str) {
        self.section(&format!("begin {id}"));
        self.body.push_str(&format!(
            "(\nset -e\n{script}\n) </dev/null 2>\"$vpsup_err\"\nrc=$?\nprintf '\\n{marker} stderr {id}\\n'\ncat \"$vpsup_err\"\nprintf '\\n{marker} end {id} %s\\n' \"$rc\"\n[ \"$rc\" -eq 0 ] || exit 0\n",
            marker = self.sections.marker()
        ));
    }

    pub fn finish(mut self) -> String {
        self.section("done");
        self.body
    }

    fn section(&mut self, what: &str) {
        self.count += 1;
        self.body.push_str(&self.sections.header(what));
    }
}

/// What one batch printed, per section.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchOutput {
    pub facts: Option<String>,
    pub probes: HashMap<usize, String>,
    /// In the order they ran.
    pub changes: Vec<ChangeOutput>,
    /// The `done` marker arrived: the script ran to its end.
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeOutput {
    pub id: usize,
    pub stdout: String,
    pub stderr: String,
    /// `None` when the script died inside this task (no `end` marker).
    pub status: Option<i32>,
}

pub fn parse(output: &str, sections: &Sections) -> BatchOutput {
    let mut result = BatchOutput::default();
    for (header, content) in sections.parse(output).iter() {
        let mut words = header.split_whitespace();
        let kind = words.next().unwrap_or("");
        let id = words.next().and_then(|w| w.parse::<usize>().ok());
        match (kind, id) {
            ("facts", _) => result.facts = Some(content.to_string()),
            ("probe", Some(id)) => {
                result.probes.insert(id, content.to_string());
            }
            ("begin", Some(id)) => result.changes.push(ChangeOutput {
                id,
                stdout: content.to_string(),
                stderr: String::new(),
                status: None,
            }),
            ("stderr", Some(id)) => {
                if let Some(c) = result.changes.last_mut().filter(|c| c.id == id) {
                    c.stderr = content.to_string();
                }
            }
            ("end", Some(id)) => {
                let status = words.next().and_then(|w| w.parse().ok());
                if let Some(c) = result.changes.last_mut().filter(|c| c.id == id) {
                    c.status = status;
                }
            }
            ("done", _) => result.complete = true,
            _ => {}
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(script: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-s")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(script.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn probes_and_changes_come_back_per_task() {
        let mut b = BatchScript::new(Sections::with_nonce(7));
        b.probe(0, "echo state-of-0");
        b.probe(1, "");
        b.change(2, "echo out; echo err >&2; printf 'no newline'");
        b.change(3, "cat; echo read-nothing");
        let sections = b.sections().clone();
        let out = parse(&run(&b.finish()), &sections);
        assert!(out.complete);
        assert_eq!(out.probes[&0], "state-of-0\n");
        assert_eq!(out.probes[&1], "");
        assert_eq!(out.changes.len(), 2);
        assert_eq!(out.changes[0].stdout, "out\nno newline");
        assert_eq!(out.changes[0].stderr, "err\n");
        assert_eq!(out.changes[0].status, Some(0));
        // Commands cannot read the rest of the script from stdin.
        assert_eq!(out.changes[1].stdout, "read-nothing\n");
    }

    #[test]
    fn the_first_failure_stops_the_batch() {
        let mut b = BatchScript::new(Sections::with_nonce(1));
        b.change(0, "false\necho never");
        b.change(1, "echo also-never");
        let sections = b.sections().clone();
        let out = parse(&run(&b.finish()), &sections);
        assert!(!out.complete);
        assert_eq!(out.changes.len(), 1);
        assert_eq!(out.changes[0].status, Some(1));
        assert_eq!(out.changes[0].stdout, "");
    }

    #[test]
    fn facts_section_parses_as_host_facts() {
        let mut b = BatchScript::new(Sections::with_nonce(2));
        b.facts();
        let sections = b.sections().clone();
        let out = parse(&run(&b.finish()), &sections);
        let facts = crate::facts::parse(out.facts.as_deref().unwrap()).unwrap();
        assert!(facts.cpus >= 1);
    }

    #[test]
    fn tasks_cannot_see_the_marker() {
        let mut b = BatchScript::new(Sections::with_nonce(3));
        b.change(0, "set | grep -c @@vpsup || true");
        let sections = b.sections().clone();
        let out = parse(&run(&b.finish()), &sections);
        assert_eq!(out.changes[0].stdout, "0\n");
    }

    #[test]
    fn a_truncated_output_is_incomplete() {
        let sections = Sections::with_nonce(9);
        let out = parse(&format!("\n{sections} begin 4\npartial"), &sections);
        assert!(!out.complete);
        assert_eq!(out.changes[0].status, None);
    }
}
