//! Hosts far away, on this machine: each in its own network namespace, every
//! packet to and from them held `delay` each way. This kernel has no netem
//! (`CONFIG_NET_SCH_NETEM` is off, so `tc qdisc ... netem` answers "Specified
//! qdisc kind is unknown"): the delay is a userspace relay between two tun
//! devices instead, on whole IP packets, so TCP's handshake pays it too.
//!
//! ```text
//! this namespace: vpsb-a (tun, 10.250.1.1; route 10.250.0.0/24)
//!                   | relay: +delay each way
//! vpsb-r (router):  vpsb-b (tun) + bridge vpsb-br 10.250.0.1/24, forwarding
//!                   | one veth per host
//! vpsb-hN:          eth0 10.250.0.(10+N)/24, default via 10.250.0.1
//! ```
//!
//! Drop removes it all, also when the test failed; a killed run leaves
//! namespaces that the next one removes first.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::describe_output;

const PREFIX: &str = "vpsb-";
const ROUTER: &str = "vpsb-r";
const TUN_HERE: &str = "vpsb-a";
const TUN_ROUTER: &str = "vpsb-b";
const HERE: &str = "10.250.1.1";
const GATEWAY: &str = "10.250.0.1";
const HOSTS_NET: &str = "10.250.0.0/24";

/// `count` hosts behind `delay` each way. Each host is an empty namespace
/// with one address; put a server in it with `ip netns exec`.
pub struct FarHosts {
    /// (namespace, address) of each host.
    pub hosts: Vec<(String, Ipv4Addr)>,
    /// Namespaces made so far (the router last), for Drop.
    namespaces: Vec<String>,
}

impl FarHosts {
    pub fn new(count: usize, delay: Duration) -> FarHosts {
        assert!(count <= 200, "one /24 holds the hosts");
        remove_leftovers();
        let mut far = FarHosts {
            hosts: Vec::new(),
            namespaces: Vec::new(),
        };
        ip(&["netns", "add", ROUTER]);
        far.namespaces.push(ROUTER.to_string());
        in_ns(ROUTER, &["link", "set", "lo", "up"]);
        in_ns(ROUTER, &["link", "add", "vpsb-br", "type", "bridge"]);
        in_ns(
            ROUTER,
            &["addr", "add", &format!("{GATEWAY}/24"), "dev", "vpsb-br"],
        );
        in_ns(ROUTER, &["link", "set", "vpsb-br", "up"]);
        run(Command::new("ip").args([
            "netns",
            "exec",
            ROUTER,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]));

        // Both tuns are opened here (the relay holds them), then one moves.
        let here = open_tun(TUN_HERE);
        let router = open_tun(TUN_ROUTER);
        ip(&["link", "set", TUN_ROUTER, "netns", ROUTER]);
        ip(&["addr", "add", &format!("{HERE}/32"), "dev", TUN_HERE]);
        ip(&["link", "set", TUN_HERE, "up"]);
        ip(&["route", "add", HOSTS_NET, "dev", TUN_HERE]);
        in_ns(ROUTER, &["link", "set", TUN_ROUTER, "up"]);
        in_ns(
            ROUTER,
            &["route", "add", &format!("{HERE}/32"), "dev", TUN_ROUTER],
        );
        relay(&here, &router, delay);
        relay(&router, &here, delay);

        for i in 0..count {
            let netns = format!("{PREFIX}h{i}");
            let port = format!("{PREFIX}p{i}");
            let addr = Ipv4Addr::new(10, 250, 0, 10 + i as u8);
            ip(&["netns", "add", &netns]);
            far.namespaces.insert(0, netns.clone());
            in_ns(
                ROUTER,
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &netns,
                ],
            );
            in_ns(ROUTER, &["link", "set", &port, "master", "vpsb-br", "up"]);
            in_ns(&netns, &["link", "set", "lo", "up"]);
            in_ns(
                &netns,
                &["addr", "add", &format!("{addr}/24"), "dev", "eth0"],
            );
            in_ns(&netns, &["link", "set", "eth0", "up"]);
            in_ns(&netns, &["route", "add", "default", "via", GATEWAY]);
            far.hosts.push((netns, addr));
        }
        far
    }
}

impl Drop for FarHosts {
    fn drop(&mut self) {
        // Hosts first, the router last; a namespace lives on while a process
        // is in it, so servers in them must be stopped before this.
        for netns in &self.namespaces {
            let _ = quiet(&["netns", "del", netns]);
        }
        // The relay's threads end when their tun goes.
        let _ = quiet(&["link", "del", TUN_HERE]);
    }
}

/// What a killed earlier run left.
fn remove_leftovers() {
    let listed = Command::new("ip").args(["netns", "list"]).output();
    let text = listed.map_or(String::new(), |o| {
        String::from_utf8_lossy(&o.stdout).into_owned()
    });
    for netns in text.lines().filter_map(|l| l.split_whitespace().next()) {
        if netns.starts_with(PREFIX) {
            let _ = quiet(&["netns", "del", netns]);
        }
    }
    let _ = quiet(&["link", "del", TUN_HERE]);
}

/// Every packet read from `from` is written to `to` `delay` later, in order.
fn relay(from: &File, to: &File, delay: Duration) {
    let (mut from, mut to) = (clone(from), clone(to));
    let (send, receive) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 65536];
        while let Ok(n) = from.read(&mut buffer) {
            if send
                .send((Instant::now() + delay, buffer[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, packet) in receive {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write(&packet).is_err() {
                // A packet the device refused (it is going away): drop it, as a link would.
                continue;
            }
        }
    });
}

fn clone(file: &File) -> File {
    file.try_clone()
        .unwrap_or_else(|e| panic!("cannot duplicate a tun descriptor: {e}"))
}

/// A tun device (IP packets, no header) named `name`, for as long as the file is open.
fn open_tun(name: &str) -> File {
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _rest: [u8; 22],
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap_or_else(|e| panic!("cannot open /dev/net/tun: {e}"));
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _rest: [0; 22],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which IfReq lays out.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) };
    assert_eq!(
        rc,
        0,
        "TUNSETIFF {name}: {}",
        std::io::Error::last_os_error()
    );
    file
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

fn in_ns(netns: &str, args: &[&str]) {
    run(Command::new("ip").args(["-n", netns]).args(args));
}

fn quiet(args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

fn run(command: &mut Command) {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}",
        describe_output(&out)
    );
}
