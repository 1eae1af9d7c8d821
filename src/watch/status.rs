//! What `vpsup status` shows first: each app's open problems on the host,
//! with since when, and when its checks last ran; read from the state files
//! the host's own runs leave (`state`), in the status probe's one exec.

use serde::Serialize;
use time::OffsetDateTime;

use super::state::State;
use super::OpenProblem;
use crate::layout::WATCH_STATE_DIR;
use crate::transport::sections::Parts;

/// The part name; followed by the app's name (`watch shop`).
const PART: &str = "watch";

/// The status probe's lines: every app's state file.
pub fn script(marker: &str) -> String {
    format!(
        "for f in {WATCH_STATE_DIR}/*.json; do\n[ -f \"$f\" ] || continue\nprintf '\\n{marker} {PART} %s\\n' \"$(basename \"$f\" .json)\"\ncat \"$f\"\ndone\ntrue\n"
    )
}

/// One app's checks on a host, as its last run left them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppWatch {
    pub app: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub checked: Option<OffsetDateTime>,
    pub problems: Vec<OpenProblem>,
    /// The state file does not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every app's state, from what `script` printed (inside `parts`).
pub fn parse(parts: &Parts) -> Vec<AppWatch> {
    parts
        .iter()
        .filter_map(|(header, text)| {
            let app = header.strip_prefix(PART)?.strip_prefix(' ')?;
            Some(match serde_json::from_str::<State>(text) {
                Ok(state) => AppWatch {
                    app: app.to_string(),
                    checked: state.checked,
                    problems: state
                        .alerting
                        .open
                        .into_iter()
                        .map(|(key, open)| OpenProblem {
                            key,
                            check: open.check,
                            text: open.text,
                            since: open.since,
                        })
                        .collect(),
                    error: None,
                },
                Err(e) => AppWatch {
                    app: app.to_string(),
                    checked: None,
                    problems: vec![],
                    error: Some(format!("its state file does not read: {e}")),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::sections::Sections;
    use crate::watch::alerting::Open;

    #[test]
    fn each_apps_open_problems_come_back_with_their_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State {
            checked: Some(OffsetDateTime::from_unix_timestamp(1_800_000_300).unwrap()),
            ..State::default()
        };
        state.alerting.open.insert(
            "site:shop.example.com".into(),
            Open {
                check: "site shop.example.com".into(),
                text: "/healthz answered 502".into(),
                since: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
                told: Default::default(),
            },
        );
        state.save(&dir.path().join("shop.json")).unwrap();
        std::fs::write(dir.path().join("blog.json"), "{").unwrap();
        let sections = Sections::random();
        let script =
            script(sections.marker()).replace(WATCH_STATE_DIR, &dir.path().display().to_string());
        let out = crate::transport::script::testing::sh_ok(&script);
        let apps = parse(&sections.parse(&String::from_utf8(out.stdout).unwrap()));
        assert_eq!(apps.len(), 2);
        assert_eq!(apps[0].app, "blog");
        assert!(apps[0].error.is_some());
        assert_eq!(apps[1].app, "shop");
        assert_eq!(apps[1].checked, state.checked);
        assert_eq!(apps[1].problems[0].text, "/healthz answered 502");
        assert_eq!(
            apps[1].problems[0].since,
            OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
        );
    }
}
