//! The playbook engine end to end: `vpsup play` over a real sshd, with the
//! file-only modules on a temp directory.

mod support;

use std::path::Path;

use serde_json::Value;
use support::*;

const SITE: &str = r#"
- name: site
  tasks:
    - name: app directory
      file: { path: "{{ dir }}/app", state: directory, mode: "0750" }
    - name: app config
      copy: { dest: "{{ dir }}/app/app.conf", content: "port={{ port }}\n", mode: "0640" }
      notify: restart app
    - name: motd
      template: { src: motd.tera, dest: "{{ dir }}/motd" }
    - name: sshd-like setting
      line: { path: "{{ dir }}/settings", line: "PermitRootLogin no", regexp: "^#?PermitRootLogin", create: true }
    - name: one-time setup
      command: { run: "echo set-up > {{ dir }}/setup", creates: "{{ dir }}/setup" }
  handlers:
    - name: restart app
      command: { run: "echo restarted >> {{ dir }}/restarts" }
"#;

struct Project {
    op: Operator,
    sshd: TestSshd,
    target: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let op = Operator::new();
        std::fs::write(op.project.path().join("site.yml"), SITE).unwrap();
        std::fs::create_dir(op.project.path().join("templates")).unwrap();
        std::fs::write(
            op.project.path().join("templates/motd.tera"),
            "Welcome to {{ facts.hostname }}, port {{ port }}\n",
        )
        .unwrap();
        Project {
            op,
            sshd: TestSshd::start(),
            target: tempfile::tempdir().unwrap(),
        }
    }

    fn dir(&self) -> &Path {
        self.target.path()
    }

    /// `vpsup play site.yml` on the sshd with the test's variables, plus `extra`.
    fn run(&self, extra: &[&str]) -> std::process::Output {
        let target = format!("root@127.0.0.1:{}", self.sshd.port);
        let dir = format!("dir={}", self.dir().display());
        let key = key_arg(&self.sshd);
        let mut args = vec![
            "play",
            "site.yml",
            &target,
            "-i",
            &key,
            "-e",
            &dir,
            "-e",
            "port=8080",
        ];
        args.extend_from_slice(extra);
        self.op.vpsup(&args)
    }

    fn play(&self, extra: &[&str]) -> std::process::Output {
        self.run(&[&["--json"], extra].concat())
    }
}

fn host(out: &std::process::Output) -> Value {
    json(out)["hosts"][0].clone()
}

fn statuses(host: &Value) -> Vec<(String, String)> {
    host["plays"][0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn first_run_changes_then_a_second_run_is_all_ok_in_one_probe() {
    let p = Project::new();
    let out = p.play(&[]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let first = host(&out);
    let changed: Vec<String> = statuses(&first)
        .into_iter()
        .filter(|(_, s)| s == "changed")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        changed,
        [
            "app directory",
            "app config",
            "motd",
            "sshd-like setting",
            "one-time setup",
            "restart app"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(p.dir().join("app/app.conf")).unwrap(),
        "port=8080\n"
    );
    assert!(std::fs::read_to_string(p.dir().join("motd"))
        .unwrap()
        .starts_with("Welcome to "));
    assert_eq!(
        std::fs::read_to_string(p.dir().join("settings")).unwrap(),
        "PermitRootLogin no\n"
    );
    assert_eq!(
        std::fs::read_to_string(p.dir().join("restarts")).unwrap(),
        "restarted\n"
    );

    let out = p.play(&[]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let second = host(&out);
    assert!(statuses(&second).iter().all(|(_, s)| s == "ok"), "{second}");
    assert_eq!(second["plays"][0]["recap"]["changed"], 0);
    assert_eq!(
        second["plays"][0]["round_trips"], 1,
        "a no-op run is one probe exec"
    );
    assert_eq!(
        std::fs::read_to_string(p.dir().join("restarts")).unwrap(),
        "restarted\n"
    );

    // The human recap says the same.
    let out = p.run(&["-v"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ok=5") && text.contains("changed=0") && text.contains("round_trips=1"),
        "{text}"
    );
}

#[test]
fn check_changes_nothing_and_diff_shows_the_difference() {
    let p = Project::new();
    assert!(p.play(&[]).status.success());
    std::fs::write(p.dir().join("app/app.conf"), "port=1\n").unwrap();
    std::fs::remove_file(p.dir().join("setup")).unwrap();

    let out = p.play(&["--check", "--diff"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let h = host(&out);
    let config = &h["plays"][0]["tasks"][1];
    assert_eq!(config["status"], "changed");
    let diff = config["diffs"][0].as_str().unwrap();
    assert!(
        diff.contains("-port=1") && diff.contains("+port=8080"),
        "{diff}"
    );
    assert_eq!(h["plays"][0]["round_trips"], 1);
    // Nothing changed on the host.
    assert_eq!(
        std::fs::read_to_string(p.dir().join("app/app.conf")).unwrap(),
        "port=1\n"
    );
    assert!(!p.dir().join("setup").exists());
    assert_eq!(
        std::fs::read_to_string(p.dir().join("restarts")).unwrap(),
        "restarted\n"
    );

    // The human output shows the diff too, and says nothing was changed.
    let out = p.run(&["--check", "--diff"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("would change") && text.contains("+port=8080"),
        "{text}"
    );
    assert!(text.contains("check mode: nothing was changed"), "{text}");
}

#[test]
fn a_failing_task_stops_the_play_and_reports_pending_handlers() {
    let p = Project::new();
    let failing = SITE.replace(
        "echo set-up > {{ dir }}/setup",
        "echo no space left >&2; exit 28",
    );
    std::fs::write(p.op.project.path().join("site.yml"), failing).unwrap();
    let out = p.play(&[]);
    assert_eq!(out.status.code(), Some(1));
    let h = host(&out);
    let tasks = statuses(&h);
    assert_eq!(
        tasks.last().unwrap(),
        &("one-time setup".to_string(), "failed".to_string())
    );
    let error = h["plays"][0]["tasks"][4]["error"].as_str().unwrap();
    assert!(
        error.contains("exit 28") && error.contains("no space left"),
        "{error}"
    );
    assert_eq!(
        h["plays"][0]["handlers_not_run"],
        serde_json::json!(["restart app"])
    );
    assert!(!p.dir().join("restarts").exists());
}

#[test]
fn playbook_mistakes_are_bad_input_naming_file_and_line() {
    let p = Project::new();
    std::fs::write(
        p.op.project.path().join("site.yml"),
        "- name: x\n  tasks:\n    - name: a\n      cpy: {}\n",
    )
    .unwrap();
    let out = p.play(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("site.yml:3: unknown module or task key `cpy`"),
        "{}",
        stderr(&out)
    );
    let out = p.op.vpsup(&["play", "nope", "root@127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no playbook \"nope\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_config_that_fails_its_check_is_never_left_in_place() {
    // A real nginx: the site file is checked with `nginx -t` once in place,
    // and a broken one is replaced by the previous version.
    let p = Project::new();
    let conf = p.dir().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "pid {0}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{ include {0}/site.conf; }}\n",
            p.dir().display()
        ),
    )
    .unwrap();
    let playbook = |body: &str| {
        format!(
            "- name: site\n  tasks:\n    - name: nginx site\n      copy:\n        dest: \"{{{{ dir }}}}/site.conf\"\n        content: \"{body}\"\n        check: \"nginx -t -q -c {} -p {{{{ dir }}}} -e stderr\"\n",
            conf.display()
        )
    };
    std::fs::write(
        p.op.project.path().join("site.yml"),
        playbook("server { listen 8080; }\\n"),
    )
    .unwrap();
    let out = p.play(&[]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let good = std::fs::read_to_string(p.dir().join("site.conf")).unwrap();

    std::fs::write(
        p.op.project.path().join("site.yml"),
        playbook("server { listen 8080; bogus_directive on; }\\n"),
    )
    .unwrap();
    let out = p.play(&[]);
    assert_eq!(out.status.code(), Some(1));
    let error = host(&out)["plays"][0]["tasks"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("bogus_directive") && error.contains("check failed"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(p.dir().join("site.conf")).unwrap(),
        good
    );
}

#[test]
fn several_hosts_run_in_parallel_with_a_result_each() {
    let (a, b) = (TestSshd::start(), TestSshd::start());
    let op = Operator::new();
    let dir = tempfile::tempdir().unwrap();
    op.write_config(&format!(
        "[hosts.alpha]\naddress = \"127.0.0.1\"\nport = {}\nidentity_file = \"{}\"\n\n\
         [hosts.beta]\naddress = \"127.0.0.1\"\nport = {}\nidentity_file = \"{}\"\n",
        a.port,
        key_arg(&a),
        b.port,
        key_arg(&b)
    ));
    std::fs::write(
        op.project.path().join("hosts.yml"),
        "- name: per host\n  tasks:\n    - name: marker\n      copy: { dest: \"{{ dir }}/{{ host.name }}\", content: \"{{ host.port }}\" }\n",
    )
    .unwrap();
    let dir_var = format!("dir={}", dir.path().display());
    let out = op.vpsup(&["play", "hosts.yml", "-e", &dir_var, "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let hosts = json(&out)["hosts"].as_array().unwrap().clone();
    let names: Vec<&str> = hosts.iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert!(
        hosts.iter().all(|h| h["plays"][0]["recap"]["changed"] == 1),
        "{hosts:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("alpha")).unwrap(),
        a.port.to_string()
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("beta")).unwrap(),
        b.port.to_string()
    );

    // --limit narrows it, and the human recap has a line per host.
    let out = op.vpsup(&["play", "hosts.yml", "-e", &dir_var, "--limit", "beta"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("beta") && !text.contains("alpha"), "{text}");
}
