//! `vpsup alerts test` against real receivers on loopback: aiosmtpd (plain,
//! STARTTLS with a throwaway CA trusted through `[alerts] ca_file`, AUTH)
//! and an HTTP server for the webhook and ntfy. Each channel's message
//! arrives as sent; a failing channel is named while the others deliver; the
//! password and token never show in vpsup's output.

mod support;

use serde_json::Value;
use support::*;

const PASSWORD: &str = "correct-horse-battery-staple-7f3a";
const TOKEN: &str = "tk_alertstesttoken0123456789";

/// Writes the secret files into the project and returns the operator.
fn operator() -> Operator {
    let op = Operator::new();
    std::fs::write(
        op.project.path().join("smtp-password"),
        format!("{PASSWORD}\n"),
    )
    .unwrap();
    std::fs::write(op.project.path().join("ntfy-token"), TOKEN).unwrap();
    op
}

fn assert_no_secrets(out: &std::process::Output) {
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out));
    assert!(!all.contains(PASSWORD), "the password was printed: {all}");
    assert!(!all.contains(TOKEN), "the token was printed: {all}");
}

fn channel<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

#[test]
fn every_channel_delivers_the_test_message_as_sent() {
    let ca = TestCa::new();
    let http = Receiver::http();
    let smtp = Receiver::smtp("starttls", Some(&ca), Some(("alerts", PASSWORD)));
    let op = operator();
    op.write_config(&format!(
        r#"[app]
name = "doctor"

[alerts]
webhook = "http://127.0.0.1:{http}/hooks/secret-path"
ntfy = "http://127.0.0.1:{http}/vpsup-topic"
ntfy_token_file = "ntfy-token"
smtp_server = "localhost:{smtp}"
smtp_user = "alerts"
smtp_password_file = "smtp-password"
email_from = "vpsup@example.com"
email_to = ["ops@example.com", "oncall@example.com"]
ca_file = "{ca}"
"#,
        http = http.port,
        smtp = smtp.port,
        ca = ca.root.display()
    ));
    let out = op.vpsup(&["alerts", "test", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_no_secrets(&out);
    let report = json(&out);
    assert_eq!(report["ok"], true);
    for name in ["webhook", "ntfy", "email"] {
        assert_eq!(channel(&report, name)["ok"], true, "{report}");
    }
    // Targets never show a webhook's path (its secret) or the topic.
    assert_eq!(
        channel(&report, "webhook")["target"],
        format!("http://127.0.0.1:{}/…", http.port)
    );

    let requests = http.received();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let hook = requests
        .iter()
        .find(|r| r["path"] == "/hooks/secret-path")
        .unwrap();
    assert_eq!(hook["headers"]["content-type"], "application/json");
    let payload: Value = serde_json::from_str(hook["body"].as_str().unwrap()).unwrap();
    assert_eq!(payload["app"], "doctor");
    assert_eq!(
        payload["summary"],
        "test message from vpsup alerts test: this channel works"
    );
    assert_eq!(payload["problems"], serde_json::json!([]));
    let host = payload["host"].as_str().unwrap().to_string();
    assert!(!host.is_empty());

    let ntfy = requests
        .iter()
        .find(|r| r["path"] == "/vpsup-topic")
        .unwrap();
    assert_eq!(ntfy["headers"]["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(
        ntfy["headers"]["title"],
        format!("vpsup {host} (doctor): test message from vpsup alerts test: this channel works")
    );
    assert_eq!(
        ntfy["body"],
        "test message from vpsup alerts test: this channel works\n"
    );

    let mails = smtp.received();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail["tls"], true, "STARTTLS was not used");
    assert_eq!(mail["login"], "alerts");
    assert_eq!(mail["from"], "vpsup@example.com");
    assert_eq!(
        mail["to"],
        serde_json::json!(["ops@example.com", "oncall@example.com"])
    );
    assert_eq!(
        mail["subject"],
        format!("vpsup {host} (doctor): test message from vpsup alerts test: this channel works")
    );
    assert_eq!(mail["header_to"], "ops@example.com, oncall@example.com");
    assert_eq!(
        mail["body"].as_str().unwrap().trim_end(),
        "test message from vpsup alerts test: this channel works"
    );
}

#[test]
fn a_failing_channel_is_named_while_the_others_deliver() {
    let ca = TestCa::new();
    let http = Receiver::http();
    let smtp = Receiver::smtp("starttls", Some(&ca), Some(("alerts", "another password")));
    let op = operator();
    // The webhook answers 500, the SMTP server refuses the password; ntfy works.
    op.write_config(&format!(
        r#"[alerts]
webhook = "http://127.0.0.1:{http}/fail"
ntfy = "http://127.0.0.1:{http}/topic"
smtp_server = "localhost:{smtp}"
smtp_user = "alerts"
smtp_password_file = "smtp-password"
email_from = "vpsup@example.com"
email_to = ["ops@example.com"]
ca_file = "{ca}"
"#,
        http = http.port,
        smtp = smtp.port,
        ca = ca.root.display()
    ));
    let out = op.vpsup(&["alerts", "test"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert_no_secrets(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "webhook (http://127.0.0.1:{}/…): FAILED: HTTP 500 Internal Server Error: receiver broke: on purpose",
            http.port
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("ntfy (http://127.0.0.1:{}/…): ok", http.port)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "email (localhost:{} to ops@example.com): FAILED: SMTP localhost:{}: permanent error (535): 5.7.8 Authentication credentials invalid",
            smtp.port, smtp.port
        )),
        "the SMTP reply is reported: {stdout}"
    );
    assert!(
        stderr(&out).contains("2 of 3 channel(s) failed: webhook, email"),
        "{}",
        stderr(&out)
    );
    let paths: Vec<Value> = http.received().iter().map(|r| r["path"].clone()).collect();
    assert_eq!(paths.len(), 2);
    assert!(paths.contains(&"/topic".into()));
    assert!(smtp.received().is_empty());

    // Now ntfy's receiver is down; the Slack-shaped webhook and plain SMTP
    // on loopback deliver.
    let plain = Receiver::smtp("plain", None, None);
    let dead = free_port();
    op.write_config(&format!(
        r#"[alerts]
webhook = "http://127.0.0.1:{http}/slack"
webhook_format = "slack"
ntfy = "http://127.0.0.1:{dead}/topic"
smtp_server = "127.0.0.1:{smtp}"
smtp_tls = "none"
email_from = "vpsup@example.com"
email_to = ["ops@example.com"]
"#,
        http = http.port,
        smtp = plain.port,
    ));
    let out = op.vpsup(&["alerts", "test", "--local", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let report = json(&out);
    assert_eq!(report["ok"], false);
    let ntfy = channel(&report, "ntfy");
    assert_eq!(ntfy["ok"], false);
    assert!(
        ntfy["error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{ntfy}"
    );
    assert_eq!(channel(&report, "webhook")["ok"], true);
    assert_eq!(channel(&report, "email")["ok"], true);
    let slack = http.received().pop().unwrap();
    assert_eq!(slack["path"], "/slack");
    let payload: Value = serde_json::from_str(slack["body"].as_str().unwrap()).unwrap();
    assert!(
        payload["text"].as_str().unwrap().starts_with("*vpsup "),
        "{payload}"
    );
    let mails = plain.received();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0]["tls"], false);
}

#[test]
fn an_unknown_ca_fails_the_tls_channels_and_a_missing_secret_file_is_bad_input() {
    let ca = TestCa::new();
    let smtp = Receiver::smtp("starttls", Some(&ca), None);
    let op = operator();
    // Without ca_file the throwaway CA is not trusted: the handshake fails.
    op.write_config(&format!(
        "[alerts]\nsmtp_server = \"localhost:{}\"\nemail_from = \"vpsup@example.com\"\nemail_to = [\"ops@example.com\"]\n",
        smtp.port
    ));
    let out = op.vpsup(&["alerts", "test"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("email (localhost:"), "{stdout}");
    assert!(stdout.to_lowercase().contains("certificate"), "{stdout}");
    assert!(smtp.received().is_empty());

    op.write_config(
        "[alerts]\nntfy = \"https://ntfy.sh/t\"\nntfy_token_file = \"missing-token\"\n",
    );
    let out = op.vpsup(&["alerts", "test"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(
        stderr(&out).contains("[alerts] ntfy_token_file ./missing-token: "),
        "{}",
        stderr(&out)
    );

    op.write_config("[app]\nname = \"doctor\"\n");
    let out = op.vpsup(&["alerts", "test"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(
        stderr(&out).contains("no [alerts] in vpsup.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn email_over_implicit_tls_logs_in_and_delivers() {
    let ca = TestCa::new();
    let smtp = Receiver::smtp("tls", Some(&ca), Some(("alerts", PASSWORD)));
    let op = operator();
    op.write_config(&format!(
        "[alerts]\nsmtp_server = \"localhost:{}\"\nsmtp_tls = \"tls\"\nsmtp_user = \"alerts\"\nsmtp_password_file = \"smtp-password\"\nemail_from = \"vpsup@example.com\"\nemail_to = [\"ops@example.com\"]\nca_file = \"{}\"\n",
        smtp.port,
        ca.root.display()
    ));
    let out = op.vpsup(&["alerts", "test"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_no_secrets(&out);
    let mails = smtp.received();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["tls"], true);
    assert_eq!(mails[0]["login"], "alerts");
    assert_eq!(mails[0]["to"], serde_json::json!(["ops@example.com"]));
}
