//! Readiness and liveness probes. Readiness says "send me traffic" and may
//! flap; liveness says "restart me" and must be more tolerant, or a slow
//! moment restarts a healthy pod (kompose makes only a liveness probe from a
//! healthcheck). The check itself comes from, in order: the database
//! engine's own (`pg_isready`, `mysqladmin ping`, ...), the site's health
//! path, the compose healthcheck, the service's port.

use serde_json::{json, Value};

use crate::backup::Engine;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Http { path: String, port: u16 },
    Exec(Vec<String>),
    Tcp(u16),
}

/// How often and how patiently (seconds, counts) readiness checks, and how
/// long the service may take to start (compose's `start_period`, checked
/// every `start_interval` meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub period: u64,
    pub timeout: u64,
    pub failures: u64,
    pub start_period: u64,
    pub start_interval: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            period: 10,
            timeout: 3,
            failures: 3,
            start_period: 0,
            start_interval: 5,
        }
    }
}

/// A compose healthcheck's test, as written (interpolated by `command`,
/// and only when it is the check the probes use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// `CMD`: words run with no shell.
    Exec(Vec<String>),
    /// `CMD-SHELL`, or a string: a script `sh -c` runs.
    Shell(String),
}

/// The compose healthcheck's test and timing; `None` without one, or with
/// `disable: true` / `test: ["NONE"]`.
pub fn from_healthcheck(definition: &Value) -> Option<(Test, Timing)> {
    let health = definition.get("healthcheck")?;
    if health.get("disable").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let test: Vec<String> = match health.get("test")? {
        Value::String(s) => vec!["CMD-SHELL".into(), s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => return None,
    };
    let test = match test.split_first()? {
        (kind, rest) if kind == "CMD" && !rest.is_empty() => Test::Exec(rest.to_vec()),
        (kind, rest) if kind == "CMD-SHELL" && !rest.is_empty() => Test::Shell(rest.join(" ")),
        _ => return None,
    };
    let secs = |key: &str, default: u64| {
        health
            .get(key)
            .and_then(Value::as_str)
            .and_then(duration_secs)
            .unwrap_or(default)
    };
    let defaults = Timing::default();
    let timing = Timing {
        period: secs("interval", 30),
        timeout: secs("timeout", 30),
        failures: health
            .get("retries")
            .and_then(Value::as_u64)
            .unwrap_or(defaults.failures)
            .max(1),
        start_period: secs("start_period", 0),
        start_interval: secs("start_interval", defaults.start_interval),
    };
    Some((test, timing))
}

/// A compose duration (`1m30s`, `5s`, `500ms`) in whole seconds, at least 1.
pub fn duration_secs(text: &str) -> Option<u64> {
    let mut total_ms: u64 = 0;
    let mut number = String::new();
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next()?);
        }
        let n: f64 = number.parse().ok()?;
        number.clear();
        let ms = match unit.as_str() {
            "h" => n * 3_600_000.0,
            "m" => n * 60_000.0,
            "s" => n * 1000.0,
            "ms" => n,
            "us" | "µs" => n / 1000.0,
            _ => return None,
        };
        total_ms += ms as u64;
    }
    if !number.is_empty() {
        return None;
    }
    Some(total_ms.div_ceil(1000).max(1))
}

/// The engine's own readiness check: it answers queries, not just the port.
pub fn engine_check(engine: &Engine) -> Option<Check> {
    let sh = |script: &str| Check::Exec(vec!["sh".into(), "-c".into(), script.to_string()]);
    Some(match engine {
        Engine::Postgres { .. } => {
            sh("pg_isready -h 127.0.0.1 -U \"${POSTGRES_USER:-postgres}\"")
        }
        Engine::Mysql => sh(
            "mariadb-admin ping -h 127.0.0.1 --silent 2>/dev/null || mysqladmin ping -h 127.0.0.1 --silent",
        ),
        Engine::Mongo => sh("mongosh --quiet --eval 'db.adminCommand({ ping: 1 })' || mongo --quiet --eval 'db.adminCommand({ ping: 1 })'"),
        Engine::Redis => sh(
            "redis-cli ${REDIS_PASSWORD:+-a \"$REDIS_PASSWORD\"} --no-auth-warning ping | grep -q PONG",
        ),
        Engine::Volume { .. } => return None,
    })
}

/// The port a database engine listens on.
pub fn engine_port(engine: &Engine) -> Option<u16> {
    match engine {
        Engine::Postgres { .. } => Some(5432),
        Engine::Mysql => Some(3306),
        Engine::Mongo => Some(27017),
        Engine::Redis => Some(6379),
        Engine::Volume { .. } => None,
    }
}

fn handler(check: &Check) -> Value {
    match check {
        Check::Http { path, port } => json!({ "httpGet": { "path": path, "port": port } }),
        Check::Exec(command) => json!({ "exec": { "command": command } }),
        Check::Tcp(port) => json!({ "tcpSocket": { "port": port } }),
    }
}

/// The startup probe, for a service given a start period: the same check
/// as often as compose checks while it starts, for the start period and the
/// failures compose allows after it. Readiness and liveness wait for it,
/// so neither needs an initial delay that would keep a quick start out of
/// traffic.
pub fn startup(check: &Check, timing: Timing) -> Option<Value> {
    if timing.start_period == 0 {
        return None;
    }
    let period = timing.start_interval.max(1);
    let mut probe = handler(check);
    probe["periodSeconds"] = json!(period);
    probe["timeoutSeconds"] = json!(timing.timeout);
    probe["failureThreshold"] = json!(timing.start_period.div_ceil(period) + timing.failures);
    Some(probe)
}

/// The readiness probe.
pub fn readiness(check: &Check, timing: Timing) -> Value {
    let mut probe = handler(check);
    probe["periodSeconds"] = json!(timing.period);
    probe["timeoutSeconds"] = json!(timing.timeout);
    probe["failureThreshold"] = json!(timing.failures);
    probe
}

/// The liveness probe: the same check (or `tcp_instead`: a cheaper one),
/// checked half as often, given more time, and restarting only after twice
/// as many failures (at least a minute of them).
pub fn liveness(check: &Check, timing: Timing, tcp_instead: Option<u16>) -> Value {
    let check = tcp_instead.map(Check::Tcp).unwrap_or_else(|| check.clone());
    let period = (timing.period * 2).max(10);
    let failures = (timing.failures * 2).max(60_u64.div_ceil(period)).max(3);
    let mut probe = handler(&check);
    probe["periodSeconds"] = json!(period);
    probe["timeoutSeconds"] = json!(timing.timeout.max(5));
    probe["failureThreshold"] = json!(failures);
    if timing.start_period == 0 {
        probe["initialDelaySeconds"] = json!(10);
    }
    probe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_compose_writes_them() {
        assert_eq!(duration_secs("5s"), Some(5));
        assert_eq!(duration_secs("1m30s"), Some(90));
        assert_eq!(duration_secs("500ms"), Some(1));
        assert_eq!(duration_secs("2h"), Some(7200));
        assert_eq!(duration_secs("soon"), None);
    }

    #[test]
    fn a_healthcheck_becomes_an_exec_check_with_its_timing() {
        let def = json!({"healthcheck": {"test": ["CMD", "pg_isready", "-U", "app"], "interval": "5s", "retries": 10, "timeout": "2s"}});
        let (test, timing) = from_healthcheck(&def).unwrap();
        assert_eq!(
            test,
            Test::Exec(vec!["pg_isready".into(), "-U".into(), "app".into()])
        );
        assert_eq!(
            timing,
            Timing {
                period: 5,
                timeout: 2,
                failures: 10,
                start_period: 0,
                start_interval: 5,
            }
        );
        let shell = json!({"healthcheck": {"test": "curl -f http://localhost/ || exit 1"}});
        assert_eq!(
            from_healthcheck(&shell).unwrap().0,
            Test::Shell("curl -f http://localhost/ || exit 1".into())
        );
        assert!(from_healthcheck(&json!({"healthcheck": {"test": ["NONE"]}})).is_none());
        assert!(from_healthcheck(&json!({"healthcheck": {"disable": true}})).is_none());
    }

    #[test]
    fn liveness_is_more_tolerant_than_readiness() {
        let check = Check::Http {
            path: "/health".into(),
            port: 8000,
        };
        let timing = Timing {
            period: 5,
            timeout: 2,
            failures: 3,
            start_period: 0,
            start_interval: 5,
        };
        let ready = readiness(&check, timing);
        let live = liveness(&check, timing, None);
        assert_eq!(ready["httpGet"], live["httpGet"]);
        let n = |p: &Value, k: &str| p[k].as_u64().unwrap();
        assert!(
            n(&live, "periodSeconds") * n(&live, "failureThreshold")
                > n(&ready, "periodSeconds") * n(&ready, "failureThreshold")
        );
        assert!(n(&live, "periodSeconds") * n(&live, "failureThreshold") >= 60);
        assert!(n(&live, "timeoutSeconds") >= n(&ready, "timeoutSeconds"));
    }

    /// A start period is a startup probe (kompose and a plain
    /// `initialDelaySeconds` would keep a quick start out of traffic for
    /// all of it): checked every start_interval, for the period and the
    /// retries after it.
    #[test]
    fn a_start_period_is_a_startup_probe_not_a_delay() {
        let def = json!({"healthcheck": {"test": ["CMD", "true"], "interval": "60s", "retries": 3, "start_period": "120s", "start_interval": "1s"}});
        let (_, timing) = from_healthcheck(&def).unwrap();
        let check = Check::Exec(vec!["true".into()]);
        let start = startup(&check, timing).unwrap();
        assert_eq!(start["periodSeconds"], 1);
        assert_eq!(start["failureThreshold"], 123);
        assert!(readiness(&check, timing)
            .get("initialDelaySeconds")
            .is_none());
        assert!(liveness(&check, timing, None)
            .get("initialDelaySeconds")
            .is_none());
        let without = json!({"healthcheck": {"test": ["CMD", "true"]}});
        let (_, timing) = from_healthcheck(&without).unwrap();
        assert!(startup(&check, timing).is_none());
    }

    #[test]
    fn databases_are_checked_by_their_engine() {
        let pg = engine_check(&Engine::Postgres {
            mode: Default::default(),
        })
        .unwrap();
        assert!(
            matches!(&pg, Check::Exec(c) if c[2].starts_with("pg_isready")),
            "{pg:?}"
        );
        assert_eq!(engine_port(&Engine::Redis), Some(6379));
        assert!(engine_check(&Engine::Volume { stop: false }).is_none());
    }
}
