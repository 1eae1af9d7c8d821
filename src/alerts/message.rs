//! One alert message, rendered for each channel: a title (email subject,
//! ntfy title), a plain-text body, and the JSON payloads webhooks expect.

use serde::Serialize;
use serde_json::{json, Value};

/// Where a problem is since the previous run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProblemState {
    Started,
    Ongoing,
    Resolved,
}

impl ProblemState {
    fn label(self) -> &'static str {
        match self {
            ProblemState::Started => "PROBLEM",
            ProblemState::Ongoing => "STILL",
            ProblemState::Resolved => "RESOLVED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub state: ProblemState,
    /// What was checked: `site doctor.example.com`, `container db`, `disk /`.
    pub check: String,
    /// What is wrong (or was), in one line.
    pub text: String,
}

/// Everything one run has to say about one host, sent as one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub host: String,
    pub app: Option<String>,
    pub problems: Vec<Problem>,
    /// One line: what the message is about.
    pub summary: String,
}

/// Discord refuses a `content` longer than this.
const DISCORD_MAX: usize = 2000;

impl Message {
    /// What `vpsup alerts test` sends.
    pub fn test(host: &str, app: Option<&str>) -> Message {
        Message {
            host: host.to_string(),
            app: app.map(str::to_string),
            problems: vec![],
            summary: "test message from vpsup alerts test: this channel works".to_string(),
        }
    }

    /// `vpsup web (doctor): SUMMARY`: the email subject and ntfy title.
    pub fn title(&self) -> String {
        match &self.app {
            Some(app) => format!("vpsup {} ({app}): {}", self.host, self.summary),
            None => format!("vpsup {}: {}", self.host, self.summary),
        }
    }

    /// The summary, then one line per problem.
    pub fn text(&self) -> String {
        let mut text = self.summary.clone();
        text.push('\n');
        if !self.problems.is_empty() {
            text.push('\n');
        }
        for p in &self.problems {
            text.push_str(&format!("{} {}: {}\n", p.state.label(), p.check, p.text));
        }
        text
    }

    /// Whether anything started or goes on (else everything is resolved, or
    /// it is a test).
    pub fn is_bad(&self) -> bool {
        self.problems
            .iter()
            .any(|p| p.state != ProblemState::Resolved)
    }

    /// `webhook_format = "json"`: vpsup's own fields.
    pub fn json(&self) -> Value {
        json!({
            "host": self.host,
            "app": self.app,
            "summary": self.summary,
            "title": self.title(),
            "text": self.text(),
            "problems": self.problems,
        })
    }

    /// `webhook_format = "slack"`: Slack's (and Mattermost's) incoming
    /// webhooks take `text` (mrkdwn).
    pub fn slack(&self) -> Value {
        json!({ "text": format!("*{}*\n{}", self.title(), self.text()) })
    }

    /// `webhook_format = "discord"`: Discord's take `content`, at most 2000
    /// characters.
    pub fn discord(&self) -> Value {
        let content = format!("**{}**\n{}", self.title(), self.text());
        let content = if content.chars().count() > DISCORD_MAX {
            let mut cut: String = content.chars().take(DISCORD_MAX - 1).collect();
            cut.push('…');
            cut
        } else {
            content
        };
        json!({ "content": content })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Message {
        Message {
            host: "web".into(),
            app: Some("doctor".into()),
            problems: vec![
                Problem {
                    state: ProblemState::Started,
                    check: "site doctor.example.com".into(),
                    text: "/healthz answered 502".into(),
                },
                Problem {
                    state: ProblemState::Resolved,
                    check: "disk /".into(),
                    text: "71% used".into(),
                },
            ],
            summary: "1 problem started, 1 resolved".into(),
        }
    }

    #[test]
    fn title_and_text_list_each_problem_with_its_state() {
        let m = down();
        assert_eq!(
            m.title(),
            "vpsup web (doctor): 1 problem started, 1 resolved"
        );
        assert_eq!(
            m.text(),
            "1 problem started, 1 resolved\n\nPROBLEM site doctor.example.com: /healthz answered 502\nRESOLVED disk /: 71% used\n"
        );
        assert!(m.is_bad());
    }

    #[test]
    fn webhook_payloads_have_the_fields_each_service_reads() {
        let m = down();
        let j = m.json();
        assert_eq!(j["host"], "web");
        assert_eq!(j["app"], "doctor");
        assert_eq!(j["problems"][0]["state"], "started");
        assert_eq!(j["problems"][1]["check"], "disk /");
        assert!(m.slack()["text"]
            .as_str()
            .unwrap()
            .starts_with("*vpsup web (doctor): "));
        assert!(m.discord()["content"]
            .as_str()
            .unwrap()
            .starts_with("**vpsup web (doctor): "));
    }

    #[test]
    fn discord_content_is_cut_to_its_limit() {
        let mut m = down();
        m.problems[0].text = "x".repeat(3000);
        let content = m.discord()["content"].as_str().unwrap().to_string();
        assert_eq!(content.chars().count(), DISCORD_MAX);
        assert!(content.ends_with('…'));
    }

    #[test]
    fn a_test_message_has_no_problems() {
        let m = Message::test("laptop", None);
        assert!(!m.is_bad());
        assert_eq!(
            m.title(),
            "vpsup laptop: test message from vpsup alerts test: this channel works"
        );
    }
}
