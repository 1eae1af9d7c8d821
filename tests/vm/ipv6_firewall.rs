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

/// Reachability over IPv6 from outside the host: a client in a network
/// namespace behind a veth pair (its own IPv6 subnet, so its packets come
/// in on an interface as the internet's would), a container on an
/// IPv6-enabled network publishing 5432, as a careless compose file does.
/// Twice: with Docker as the distribution ships it, and with Docker
/// filtering IPv6 itself (`ip6tables`, the default since Docker 27), where
/// its DNAT sends the traffic through FORWARD, past ufw's INPUT rules, and
/// only the DOCKER-USER block in after6.rules stands in the way. Docker is
/// restarted for that with the app's containers running (live-restore):
/// Docker 26 then leaves out the jump to DOCKER-USER (moby#48560), and the
/// first run of this test found the port open; init's docker-user-first,
/// run after every start of Docker, puts it back. Each time
/// the port answers inside the host, not from outside, and does from
/// outside once ufw opens it the way that path needs (so the block is the
/// firewall's doing, not a network that does not work).
pub fn published_ports_are_closed_over_ipv6(vm: &TestVm, port: u16, key: &Path) {
    let script = format!("set -e\n{}{PROBE_OVER_IPV6}", crate::IMPORT_PROBE_IMAGE);
    let out = vm.ssh_on(port, "deploy", key, &script, &[]);
    let seen = text(&out);
    assert!(out.status.success(), "{seen}");
    let hello = "hello from the container";
    for docker in ["as shipped", "ip6tables"] {
        let said = |what: &str| {
            let prefix = format!("{docker} {what}: ");
            seen.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{seen}"))
                .to_string()
        };
        assert!(said("inside").contains(hello), "{docker}: {seen}");
        assert!(
            !said("outside").contains(hello),
            "{docker}: reachable over IPv6 from outside:\n{seen}"
        );
        assert!(said("opened").contains(hello), "{docker}: {seen}");
    }
    // With ip6tables, Docker's own DNAT carries the traffic (the path the
    // DOCKER-USER block is for), not its userland proxy.
    assert!(seen.contains("ip6tables path: dnat"), "{seen}");
}

/// See `published_ports_are_closed_over_ipv6`; prints `<docker> <what>: ...`
/// lines. ufw's rules for 5432 are removed again each time.
const PROBE_OVER_IPV6: &str = r#"sudo ip netns add v6out
sudo ip link add v6host type veth peer name v6peer
sudo ip link set v6peer netns v6out
sudo ip addr add fd00:99::1/64 dev v6host nodad
sudo ip link set v6host up
sudo ip netns exec v6out ip addr add fd00:99::2/64 dev v6peer nodad
sudo ip netns exec v6out ip link set v6peer up
docker network create --ipv6 --subnet fd00:d0c::/64 v6net >/dev/null
outside() { sudo ip netns exec v6out curl -g -sS --max-time 5 'http://[fd00:99::1]:5432/' 2>&1 || true; }
probe() {
  docker run -d --name probe6 --network v6net -p 5432:5432 vpsup-probe /bin/busybox httpd -f -p 5432 -h /www >/dev/null
  for i in $(seq 20); do curl -gfsS 'http://[::1]:5432/' >/dev/null 2>&1 && break; sleep 1; done
  echo "$1 inside: $(curl -gsS --max-time 5 'http://[::1]:5432/' 2>&1 || true)"
  echo "$1 outside: $(outside)"
  # Docker's DNAT goes through FORWARD (ufw route), its proxy through INPUT.
  if sudo ip6tables -t nat -S DOCKER 2>/dev/null | grep -q 'dport 5432 .*DNAT'; then
    echo "$1 path: dnat"
    sudo ufw route allow proto tcp from any to any port 5432 >/dev/null
    echo "$1 opened: $(outside)"
    sudo ufw route delete allow proto tcp from any to any port 5432 >/dev/null
  else
    echo "$1 path: proxy"
    sudo ufw allow 5432/tcp >/dev/null
    echo "$1 opened: $(outside)"
    sudo ufw delete allow 5432/tcp >/dev/null
  fi
  echo "$1 ipv6 forwarding: $(cat /proc/sys/net/ipv6/conf/all/forwarding)"
  echo "$1 forward: $(sudo ip6tables -S FORWARD | tr '\n' ';')"
  docker rm -f probe6 >/dev/null
}
probe 'as shipped'
# Docker before 27 filters IPv6 only when asked, as an experiment (added to
# init's daemon.json, whose live-restore keeps the app running).
sudo sed -i '$ s/^}$/  ,"experimental": true, "ip6tables": true\n}/' /etc/docker/daemon.json
sudo grep -q '"ip6tables": true' /etc/docker/daemon.json
sudo systemctl restart docker
for i in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
probe ip6tables
docker network rm v6net >/dev/null
sudo ip netns del v6out
"#;
