//! What a compose file publishes on the host, and making it safe.
//!
//! Docker writes its own iptables rules for published ports, ahead of ufw's:
//! `5432:5432` opens the database to the internet on a host whose firewall
//! says otherwise. (`init` also closes that bypass with DOCKER-USER rules; this
//! is the second line.) `deploy` refuses such ports, or, when the project
//! says `public_ports = "loopback"`, binds them to 127.0.0.1, where only the
//! host (and its nginx) reaches them. Sites are served through nginx only.
//!
//! Both port syntaxes of the compose specification are read: short
//! (`[IP:][HOST:]CONTAINER[/PROTO]`, ranges, `[::1]` or bare IPv6) and long
//! (`target`, `published`, `host_ip`, `protocol`). `network_mode: host` puts
//! every container port on the host's interfaces and is refused. Each file
//! comes interpolated (`compose_model`): what is checked is what compose
//! will read, `${NET:-host}` included.

use serde_json::{Map, Value};

/// One port a service publishes on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub service: String,
    /// The address it binds; `None`: every interface (Docker's default).
    pub host_ip: Option<String>,
    /// `5432`, `8000-8010`, or empty: a port Docker picks.
    pub host_port: String,
    pub container_port: String,
    pub protocol: String,
    /// As written in the file, for messages.
    pub spec: String,
}

impl Published {
    /// Reached from other machines: any address but loopback.
    pub fn is_public(&self) -> bool {
        !self.host_ip.as_deref().is_some_and(is_loopback)
    }

    fn loopback_spec(&self) -> Value {
        let proto = if self.protocol == "tcp" {
            String::new()
        } else {
            format!("/{}", self.protocol)
        };
        Value::String(format!(
            "127.0.0.1:{}:{}{proto}",
            self.host_port, self.container_port
        ))
    }
}

fn is_loopback(ip: &str) -> bool {
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<std::net::IpAddr>()
        .is_ok_and(|a| a.is_loopback())
}

/// A way the file exposes containers that vpsup will not deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    Public(Published),
    HostNetwork { service: String },
}

impl std::fmt::Display for Exposure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exposure::Public(p) => write!(
                f,
                "service {} publishes {:?} on every interface: Docker bypasses the firewall for published ports, so the internet would reach it. Bind it to loopback (\"127.0.0.1:{}:{}\"), drop it (services reach each other by name on the compose network; sites go through nginx), or set [app] public_ports = \"loopback\" to have vpsup do that",
                p.service,
                p.spec,
                if p.host_port.is_empty() { "" } else { &p.host_port },
                p.container_port
            ),
            Exposure::HostNetwork { service } => write!(
                f,
                "service {service} uses network_mode: host, which puts every port it listens on on the host's interfaces, past the firewall; use the compose network and publish on 127.0.0.1 instead"
            ),
        }
    }
}

/// Every port each service publishes, in file order.
pub fn published(compose: &Value) -> Result<Vec<Published>, String> {
    let mut out = Vec::new();
    for (service, definition) in services(compose)? {
        let Some(ports) = definition.get("ports") else {
            continue;
        };
        let ports = ports
            .as_array()
            .ok_or_else(|| format!("service {service}: `ports` is not a list"))?;
        for port in ports {
            out.push(parse_port(service, port)?);
        }
    }
    Ok(out)
}

/// What would expose a container past the firewall.
pub fn exposures(compose: &Value) -> Result<Vec<Exposure>, String> {
    let mut found = Vec::new();
    for (service, definition) in services(compose)? {
        if definition.get("network_mode").and_then(Value::as_str) == Some("host") {
            found.push(Exposure::HostNetwork {
                service: service.to_string(),
            });
        }
    }
    found.extend(
        published(compose)?
            .into_iter()
            .filter(Published::is_public)
            .map(Exposure::Public),
    );
    Ok(found)
}

/// Binds every public port to 127.0.0.1 (short syntax kept short, long
/// syntax given `host_ip`). Returns what changed, as `service: before -> after`.
pub fn bind_to_loopback(compose: &mut Value) -> Result<Vec<String>, String> {
    let mut changed = Vec::new();
    let names: Vec<String> = services(compose)?.map(|(n, _)| n.to_string()).collect();
    for service in names {
        let Some(ports) = compose["services"][&service]
            .get_mut("ports")
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for port in ports.iter_mut() {
            let parsed = parse_port(&service, port)?;
            if !parsed.is_public() {
                continue;
            }
            match port {
                Value::Object(long) => {
                    long.insert("host_ip".into(), Value::String("127.0.0.1".into()));
                }
                other => *other = parsed.loopback_spec(),
            }
            changed.push(format!(
                "{service}: {} -> 127.0.0.1:{}:{}",
                parsed.spec, parsed.host_port, parsed.container_port
            ));
        }
    }
    Ok(changed)
}

fn services(compose: &Value) -> Result<impl Iterator<Item = (&str, &Value)>, String> {
    let services: &Map<String, Value> = match compose.get("services") {
        Some(Value::Object(s)) => s,
        Some(_) => return Err("`services` is not a mapping".to_string()),
        None => return Err("the compose file has no `services`".to_string()),
    };
    Ok(services.iter().map(|(k, v)| (k.as_str(), v)))
}

fn parse_port(service: &str, port: &Value) -> Result<Published, String> {
    let bad = |why: &str| format!("service {service}: port {port}: {why}");
    match port {
        Value::Number(n) => Ok(Published {
            service: service.to_string(),
            host_ip: None,
            host_port: String::new(),
            container_port: n.to_string(),
            protocol: "tcp".to_string(),
            spec: n.to_string(),
        }),
        Value::String(spec) => parse_short(service, spec).map_err(|why| bad(&why)),
        Value::Object(long) => {
            let field = |name: &str| {
                long.get(name).and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
            };
            let target = field("target").ok_or_else(|| bad("the long syntax needs `target`"))?;
            Ok(Published {
                service: service.to_string(),
                host_ip: field("host_ip").filter(|ip| !is_any(ip)),
                host_port: field("published").unwrap_or_default(),
                container_port: target,
                protocol: field("protocol").unwrap_or_else(|| "tcp".to_string()),
                spec: Value::Object(long.clone()).to_string(),
            })
        }
        _ => Err(bad("not a port")),
    }
}

/// `0.0.0.0` and `::` mean every interface, as no address does.
fn is_any(ip: &str) -> bool {
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<std::net::IpAddr>()
        .is_ok_and(|a| a.is_unspecified())
}

/// `[IP:][HOST:]CONTAINER[/PROTO]`; IP may be IPv6, bare or in brackets.
fn parse_short(service: &str, spec: &str) -> Result<Published, String> {
    let (ports, protocol) = match spec.rsplit_once('/') {
        Some((p, proto)) => (p, proto.to_string()),
        None => (spec, "tcp".to_string()),
    };
    // From the right: CONTAINER, then HOST, then whatever is left is the IP
    // (which may hold colons itself).
    let mut parts = ports.rsplitn(3, ':');
    let container_port = parts.next().unwrap_or_default().to_string();
    let host_port = parts.next().unwrap_or_default().to_string();
    let host_ip = parts.next().map(str::to_string);
    let valid_port =
        |p: &str| p.split('-').count() <= 2 && p.split('-').all(|n| n.parse::<u16>().is_ok());
    if !valid_port(&container_port) || !(host_port.is_empty() || valid_port(&host_port)) {
        return Err("expected [IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]".to_string());
    }
    if let Some(ip) = &host_ip {
        let bare = ip.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("{ip:?} is not an IP address"));
        }
    }
    Ok(Published {
        service: service.to_string(),
        host_ip: host_ip.filter(|ip| !is_any(ip)),
        host_port,
        container_port,
        protocol,
        spec: spec.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compose(yaml: &str) -> Value {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn public_specs(yaml: &str) -> Vec<String> {
        published(&compose(yaml))
            .unwrap()
            .into_iter()
            .filter(Published::is_public)
            .map(|p| p.spec)
            .collect()
    }

    #[test]
    fn short_syntax_public_and_loopback() {
        let yaml = r#"
services:
  db:
    image: postgres:16
    ports:
      - "5432:5432"
      - "127.0.0.1:5433:5432"
      - "0.0.0.0:5434:5432"
      - "6000"
      - 7000
      - "127.0.0.1::8000"
      - "8080-8081:80-81"
      - "53:53/udp"
      - "[::1]:9000:9000"
      - "::1:9001:9001"
      - "[::]:9002:9002"
      - "203.0.113.7:9003:9003"
  web:
    image: nginx
"#;
        assert_eq!(
            public_specs(yaml),
            [
                "5432:5432",
                "0.0.0.0:5434:5432",
                "6000",
                "7000",
                "8080-8081:80-81",
                "53:53/udp",
                "[::]:9002:9002",
                "203.0.113.7:9003:9003"
            ]
        );
        let all = published(&compose(yaml)).unwrap();
        let udp = all.iter().find(|p| p.spec == "53:53/udp").unwrap();
        assert_eq!(
            (udp.host_port.as_str(), udp.protocol.as_str()),
            ("53", "udp")
        );
        let v6 = all.iter().find(|p| p.spec == "::1:9001:9001").unwrap();
        assert_eq!(v6.host_ip.as_deref(), Some("::1"));
        assert!(!v6.is_public());
    }

    #[test]
    fn long_syntax_and_host_network() {
        let yaml = r#"
services:
  api:
    ports:
      - target: 8000
        published: "8000"
      - target: 8001
        host_ip: 127.0.0.1
        published: 8001
      - target: 8002
        host_ip: "::"
  metrics:
    network_mode: host
"#;
        let found = exposures(&compose(yaml)).unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(
            found[0],
            Exposure::HostNetwork {
                service: "metrics".into()
            }
        );
        let message = found[1].to_string();
        assert!(message.contains("service api publishes"), "{message}");
        assert!(message.contains("127.0.0.1:8000:8000"), "{message}");
        assert!(
            matches!(&found[2], Exposure::Public(p) if p.container_port == "8002" && p.host_port.is_empty())
        );
    }

    #[test]
    fn public_ports_are_rebound_to_loopback_and_then_nothing_is_public() {
        let mut doc = compose(
            r#"
services:
  db:
    ports: ["5432:5432", "127.0.0.1:6379:6379", "53:53/udp", "7000"]
  api:
    ports:
      - target: 8000
        published: 8000
"#,
        );
        let changed = bind_to_loopback(&mut doc).unwrap();
        assert_eq!(
            changed,
            [
                "api: {\"published\":8000,\"target\":8000} -> 127.0.0.1:8000:8000",
                "db: 5432:5432 -> 127.0.0.1:5432:5432",
                "db: 53:53/udp -> 127.0.0.1:53:53",
                "db: 7000 -> 127.0.0.1::7000"
            ]
        );
        assert_eq!(doc["services"]["db"]["ports"][2], "127.0.0.1:53:53/udp");
        assert_eq!(doc["services"]["api"]["ports"][0]["host_ip"], "127.0.0.1");
        assert!(exposures(&doc).unwrap().is_empty());
        assert!(bind_to_loopback(&mut doc).unwrap().is_empty(), "idempotent");
    }

    #[test]
    fn malformed_ports_are_named() {
        for (yaml, expected) in [
            (
                "services:\n  db:\n    ports: [\"abc:5432\"]\n",
                "service db: port \"abc:5432\"",
            ),
            (
                "services:\n  db:\n    ports: [\"nohost:1:2\"]\n",
                "is not an IP address",
            ),
            (
                "services:\n  db:\n    ports: 5432\n",
                "`ports` is not a list",
            ),
            (
                "services:\n  db:\n    ports: [{published: 1}]\n",
                "needs `target`",
            ),
            ("version: '3'\n", "no `services`"),
        ] {
            let err = published(&compose(yaml)).unwrap_err();
            assert!(err.contains(expected), "{yaml}: {err}");
        }
    }
}
