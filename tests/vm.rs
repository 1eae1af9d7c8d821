//! Tier 2: a real "fresh VPS" (Debian 13 under QEMU, see tests/support/vm.rs),
//! driven by the real binary. Minutes, not seconds: `tests/run` runs these
//! after the tier-1 tests (`cargo test --test vm -- --ignored`). One VM per run,
//! stages in sequence, because every boot costs minutes under emulation.

mod support;

use support::*;

const SYSTEM_PLAYBOOK: &str = r#"
- name: system modules on a fresh host
  tasks:
    - name: firewall package
      apt: { packages: [ufw] }
    - name: admin user
      user: { name: deploy, groups: [sudo], shell: /bin/bash }
    - name: admin key
      authorized_key: { user: deploy, keys: ["{{ admin_key }}"] }
    - name: passwordless sudo for the admin
      copy: { dest: /etc/sudoers.d/90-deploy, content: "deploy ALL=(ALL) NOPASSWD:ALL\n", mode: "0440" }
    - name: kernel setting
      sysctl: { values: { kernel.kptr_restrict: 2 } }
    - name: sshd running and enabled
      service: { name: ssh, enabled: true, state: started }
    - name: firewall on, SSH first
      ufw:
        ssh_port: 22
        defaults: { incoming: deny, outgoing: allow, routed: deny }
        rules:
          - { port: 22, proto: tcp, action: limit, comment: ssh }
          - { port: 80, proto: tcp, action: allow }
          - { port: 443, proto: tcp, action: allow }
        state: enabled
"#;

#[test]
#[ignore = "tier 2: boots a VM (minutes); tests/run runs it"]
fn a_fresh_vps_is_probed_and_configured_by_the_real_binary() {
    let vm = TestVm::boot();
    let op = Operator::new();
    let target = format!("root@127.0.0.1:{}", vm.ssh_port);
    let key = vm.root_key().display().to_string();

    // Facts of a real systemd host, in one round trip.
    let out = op.vpsup(&["facts", &target, "-i", &key, "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let f = json(&out)["hosts"][0]["facts"].clone();
    assert_eq!(
        (
            f["os_id"].as_str(),
            f["os_version"].as_str(),
            f["os_codename"].as_str()
        ),
        (Some("debian"), Some("13"), Some("trixie"))
    );
    assert_eq!(f["init_system"], "systemd");
    assert_eq!(
        f["public_ipv4"], "198.51.100.15",
        "the guest's documentation-range address counts as public"
    );
    assert_eq!(f["sudo"], "root");
    assert!(
        f["docker"].is_null() && f["nginx"].is_null() && f["ufw"].is_null(),
        "{f}"
    );

    // The same with the root password instead of the key, as a provider's
    // welcome mail gives it.
    let password = format!("{}\n", vm.root_password());
    let out = op.vpsup_with_stdin(
        &["facts", &target, "--password-stdin", "--json"],
        password.as_bytes(),
    );
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(json(&out)["hosts"][0]["facts"]["hostname"], "vps");

    // The system-changing modules, for real: apt, user, authorized_key, sysctl,
    // service, ufw (enabled only after the SSH rule exists).
    std::fs::write(op.project.path().join("system.yml"), SYSTEM_PLAYBOOK).unwrap();
    let admin_key = generate_key(op.home.path(), "admin", None);
    let admin_pub = std::fs::read_to_string(admin_key.with_extension("pub")).unwrap();
    let admin_var = format!("admin_key={}", admin_pub.trim());
    let play = |extra: &[&str]| {
        let mut args = vec![
            "play",
            "system.yml",
            &target,
            "-i",
            &key,
            "-e",
            &admin_var,
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = op.vpsup(&args);
        assert!(out.status.success(), "{}", describe_output(&out));
        json(&out)["hosts"][0]["plays"][0].clone()
    };
    let first = play(&[]);
    assert_eq!(first["recap"]["failed"], 0, "{first}");
    assert!(first["recap"]["changed"].as_u64().unwrap() >= 6, "{first}");

    let second = play(&[]);
    assert_eq!(second["recap"]["changed"], 0, "converged: {second}");
    assert_eq!(
        second["round_trips"], 1,
        "a no-op run is one probe exec: {second}"
    );
    let check = play(&["--check"]);
    assert_eq!(check["recap"]["changed"], 0, "{check}");

    // From outside, with real clients.
    let out = vm.ssh("deploy", &admin_key, "sudo -n true && id -nG", &[]);
    assert!(
        out.status.success(),
        "the admin logs in with the key and has sudo: {}",
        describe_output(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sudo"));
    // One connection for all of it: the firewall now rate-limits SSH (6 new
    // connections per 30 s), as it should.
    let state = vm.root(
        "ufw status verbose; grep DEFAULT_FORWARD_POLICY /etc/default/ufw; \
         echo kptr=$(cat /proc/sys/kernel/kptr_restrict); cat /etc/sysctl.d/60-vpsup.conf",
    );
    assert!(state.contains("Status: active"), "{state}");
    assert!(
        state.contains("Default: deny (incoming), allow (outgoing)"),
        "{state}"
    );
    // ufw shows routed as "disabled" while the kernel does not forward; the
    // policy itself is in its config.
    assert!(state.contains("DEFAULT_FORWARD_POLICY=\"DROP\""), "{state}");
    for rule in ["22/tcp", "80/tcp", "443/tcp"] {
        assert!(state.contains(rule), "{rule} missing: {state}");
    }
    assert!(state.contains("LIMIT IN"), "SSH is rate-limited: {state}");
    assert!(
        state.contains("kptr=2") && state.contains("kernel.kptr_restrict = 2"),
        "{state}"
    );
}
