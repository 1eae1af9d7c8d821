//! How nginx reaches a site's service: the service's container port is
//! published on 127.0.0.1 at a port vpsup picks, through a compose override
//! that vpsup writes beside the project's compose files. Loopback only: the
//! internet reaches services through nginx on 443, never directly.
//!
//! The port is derived from the app, service and container port (stable from
//! one deploy to the next, so nginx and compose always agree), in
//! 20000-29999, moving on to the next free one when two of the app's targets
//! land on the same number.

use std::collections::BTreeMap;

use serde_json::{json, Value};

const FIRST: u16 = 20000;
const SPAN: u16 = 10000;

/// A service and the container port nginx proxies to.
pub type Target = (String, u16);

/// The loopback port of each target.
pub fn loopback_ports(app: &str, targets: &[Target]) -> BTreeMap<Target, u16> {
    assign(app, targets, &[])
}

/// The loopback ports of a site's services started beside the running ones
/// under `slot` (zero-downtime deploys, `deploy::switch`): derived like
/// `loopback_ports`, with the slot in the key, and never one of `taken`
/// (what the running instances hold) or another target's.
pub fn slot_ports(
    app: &str,
    slot: &str,
    targets: &[Target],
    taken: &[u16],
) -> BTreeMap<Target, u16> {
    assign(&format!("{app}/{slot}"), targets, taken)
}

/// A port from a hash of `key`/service/port per target, moving on to the
/// next free one past `taken` and the ports already given.
fn assign(key: &str, targets: &[Target], taken: &[u16]) -> BTreeMap<Target, u16> {
    let mut unique: Vec<&Target> = targets.iter().collect();
    unique.sort();
    unique.dedup();
    let mut assigned: BTreeMap<Target, u16> = BTreeMap::new();
    for target in unique {
        let mut offset =
            (fnv1a(&format!("{key}/{}/{}", target.0, target.1)) % u64::from(SPAN)) as u16;
        while assigned.values().any(|p| *p == FIRST + offset) || taken.contains(&(FIRST + offset)) {
            offset = (offset + 1) % SPAN;
        }
        assigned.insert(target.clone(), FIRST + offset);
    }
    assigned
}

/// The compose override that publishes each target on its loopback port.
pub fn compose_override(ports: &BTreeMap<Target, u16>) -> Value {
    let mut services = serde_json::Map::new();
    for ((service, container), host) in ports {
        let entry = services
            .entry(service.clone())
            .or_insert_with(|| json!({"ports": []}));
        if let Some(list) = entry["ports"].as_array_mut() {
            list.push(json!(format!("127.0.0.1:{host}:{container}")));
        }
    }
    json!({ "services": services })
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(service: &str, port: u16) -> Target {
        (service.to_string(), port)
    }

    #[test]
    fn ports_are_stable_distinct_and_in_range() {
        let targets = [t("frontend", 80), t("backend", 8000), t("frontend", 80)];
        let ports = loopback_ports("doctor", &targets);
        assert_eq!(ports.len(), 2);
        assert_eq!(ports, loopback_ports("doctor", &targets[..2]));
        assert_ne!(ports[&t("frontend", 80)], ports[&t("backend", 8000)]);
        assert!(ports.values().all(|p| (FIRST..FIRST + SPAN).contains(p)));
        assert_ne!(
            loopback_ports("shop", &targets)[&t("frontend", 80)],
            ports[&t("frontend", 80)],
            "another app gets other ports"
        );
    }

    /// A slot's ports differ from the app's and from what runs (`taken`),
    /// and stay the same for the same inputs.
    #[test]
    fn slot_ports_avoid_the_running_ones() {
        let targets = [t("frontend", 80), t("backend", 8000)];
        let app = loopback_ports("doctor", &targets);
        let taken: Vec<u16> = app.values().copied().collect();
        let blue = slot_ports("doctor", "blue", &targets, &taken);
        assert_eq!(blue, slot_ports("doctor", "blue", &targets, &taken));
        assert!(blue.values().all(|p| !taken.contains(p)));
        let green = slot_ports("doctor", "green", &targets, &taken);
        assert_ne!(blue, green);
        // A port the running slot holds is skipped, even where the hash lands.
        let blocked: Vec<u16> = blue.values().copied().collect();
        let moved = slot_ports("doctor", "blue", &targets, &blocked);
        assert!(moved.values().all(|p| !blocked.contains(p)), "{moved:?}");
    }

    #[test]
    fn colliding_targets_move_on() {
        // Many targets in one app: all distinct even when hashes collide.
        let targets: Vec<Target> = (0..2000).map(|i| t("svc", 1 + i)).collect();
        let ports = loopback_ports("doctor", &targets);
        let mut seen: Vec<u16> = ports.values().copied().collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 2000);
    }

    #[test]
    fn the_override_publishes_on_loopback_only() {
        let ports = BTreeMap::from([
            (t("backend", 8000), 20001),
            (t("backend", 9000), 20002),
            (t("frontend", 80), 20003),
        ]);
        let file = compose_override(&ports);
        assert_eq!(
            file,
            json!({"services": {
                "backend": {"ports": ["127.0.0.1:20001:8000", "127.0.0.1:20002:9000"]},
                "frontend": {"ports": ["127.0.0.1:20003:80"]}
            }})
        );
        assert!(super::super::port_guard::exposures(&file)
            .unwrap()
            .is_empty());
    }
}
