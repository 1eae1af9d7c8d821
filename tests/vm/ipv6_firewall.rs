//! Published container ports are closed over IPv6 as over IPv4 (issue 14,
//! finding 2): init appends the DOCKER-USER block to ufw's after6.rules,
//! and ufw has loaded it into ip6tables.

use std::path::Path;

use crate::support::*;

/// On a host init converged: after6.rules holds the block exactly as
/// rendered (tests/golden/ufw_docker_user6.rules.tera.out) between its two
/// markers, once, and ip6tables' DOCKER-USER chain holds its rules, sending
/// new connections to ufw's IPv6 routing rules, then dropping them.
pub fn after6_rules_close_published_ports(vm: &TestVm, port: u16, key: &Path) {
    let out = vm.ssh_on(
        port,
        "deploy",
        key,
        "sudo cat /etc/ufw/after6.rules; echo '--- ip6tables'; sudo ip6tables -S DOCKER-USER",
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let seen = String::from_utf8_lossy(&out.stdout);
    let (file, chain) = seen
        .split_once("--- ip6tables\n")
        .unwrap_or_else(|| panic!("{seen}"));
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ufw_docker_user6.rules.tera.out");
    let block = std::fs::read_to_string(&golden).unwrap();
    let marked = format!("# BEGIN VPSUP DOCKER-USER\n{block}# END VPSUP DOCKER-USER\n");
    assert_eq!(file.matches(&marked).count(), 1, "after6.rules:\n{file}");
    assert!(
        chain
            .lines()
            .any(|l| l == "-A DOCKER-USER -j ufw6-user-forward"),
        "no jump to ufw's IPv6 rules:\n{chain}"
    );
    // ip6tables lists the states in its own order (INVALID,NEW).
    assert!(
        chain.lines().any(|l| {
            l.starts_with("-A DOCKER-USER -m conntrack --ctstate ")
                && l.ends_with(" -j DROP")
                && l.contains("NEW")
                && l.contains("INVALID")
        }),
        "new connections are not dropped:\n{chain}"
    );
}
