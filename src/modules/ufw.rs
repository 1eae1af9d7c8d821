//! `ufw`: default policies, incoming rules and the on/off state of the
//! Uncomplicated Firewall. The one thing it must never do is switch the firewall
//! on before a rule lets SSH in, which locks the operator out. So: validation
//! demands a rule for `ssh_port`, planning refuses a rule set in which an earlier
//! rule would block SSH, and `ufw --force enable` is the script's last command,
//! behind a check that the SSH rule really landed in ufw's rules file.
//!
//! State is read from files, not from ufw's human output: the policies from
//! /etc/default/ufw, on/off from /etc/ufw/ufw.conf, and the rules from the
//! `### tuple ###` records ufw keeps in /etc/ufw/user.rules and user6.rules (its
//! own machine-readable copy, which `ufw show added` prints from; unlike
//! `show added` it says which address family holds each rule).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Change, Module, ModuleError, Plan, PlanContext, ProbeOptions, Scope, Validate};
use crate::transport::script::quote;

const UFW_CONF: &str = "/etc/ufw/ufw.conf";
const UFW_DEFAULTS: &str = "/etc/default/ufw";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ufw {
    /// The port sshd listens on: required to enable the firewall or purge rules,
    /// so vpsup can prove SSH stays reachable.
    #[serde(default, deserialize_with = "super::de_port")]
    ssh_port: Option<u16>,
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    rules: Vec<RuleArgs>,
    #[serde(default)]
    state: FirewallState,
    /// Delete incoming rules that `rules` does not list (outgoing and routed
    /// rules cannot be listed here, so they are left alone).
    #[serde(default)]
    purge: bool,
    /// Delete the incoming rules carrying this comment that `rules` does not
    /// list: the rules an earlier run added, and only those (a port dropped
    /// from the config is closed; rules someone else added stay).
    #[serde(default)]
    purge_comment: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FirewallState {
    Enabled,
    Disabled,
    #[default]
    Unchanged,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    incoming: Option<Policy>,
    outgoing: Option<Policy>,
    routed: Option<Policy>,
}

/// ufw's word for a direction and the /etc/default/ufw key holding its policy.
const DIRECTIONS: [(&str, &str); 3] = [
    ("incoming", "DEFAULT_INPUT_POLICY"),
    ("outgoing", "DEFAULT_OUTPUT_POLICY"),
    ("routed", "DEFAULT_FORWARD_POLICY"),
];

impl Defaults {
    /// The wanted policy per direction, in `DIRECTIONS` order.
    fn wanted(&self) -> [Option<Policy>; 3] {
        [self.incoming, self.outgoing, self.routed]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Policy {
    Allow,
    Deny,
    Reject,
}

impl Policy {
    fn as_str(self) -> &'static str {
        match self {
            Policy::Allow => "allow",
            Policy::Deny => "deny",
            Policy::Reject => "reject",
        }
    }

    /// The iptables target ufw writes to /etc/default/ufw for each policy.
    fn from_config(value: &str) -> Option<Policy> {
        match value {
            "ACCEPT" => Some(Policy::Allow),
            "DROP" => Some(Policy::Deny),
            "REJECT" => Some(Policy::Reject),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleArgs {
    port: PortArg,
    #[serde(default)]
    proto: Proto,
    #[serde(default)]
    action: Action,
    /// Source address or CIDR; any source when absent.
    from: Option<String>,
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PortArg {
    Number(u64),
    Text(String),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Proto {
    #[default]
    Tcp,
    Udp,
    Any,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Any => "any",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    #[default]
    Allow,
    Limit,
    Deny,
    Reject,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Limit => "limit",
            Action::Deny => "deny",
            Action::Reject => "reject",
        }
    }

    /// As ufw reads its own records: anything unknown counts as deny.
    fn from_record(word: &str) -> Action {
        match word {
            "allow" => Action::Allow,
            "limit" => Action::Limit,
            "reject" => Action::Reject,
            _ => Action::Deny,
        }
    }

    fn lets_in(self) -> bool {
        matches!(self, Action::Allow | Action::Limit)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// Where ufw keeps this family's rules (readable by root only).
    fn rules_file(self) -> &'static str {
        match self {
            Family::V4 => "/etc/ufw/user.rules",
            Family::V6 => "/etc/ufw/user6.rules",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}

/// One rule in ufw's own terms (the fields of a `### tuple ###` record), with
/// the any-address of either family written `any` so IPv4/IPv6 twins compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UfwRule {
    action: Action,
    /// "", "log" or "log-all".
    logtype: String,
    route: bool,
    outgoing: bool,
    proto: String,
    dport: String,
    dst: String,
    sport: String,
    src: String,
    dapp: String,
    sapp: String,
    iface_in: String,
    iface_out: String,
}

impl UfwRule {
    /// What ufw matches rules on: everything but action and logging. Adding a rule
    /// with the same target replaces the old one in place.
    fn target(&self) -> UfwRule {
        UfwRule {
            action: Action::Allow,
            logtype: String::new(),
            ..self.clone()
        }
    }

    fn is_incoming(&self) -> bool {
        !self.route && !self.outgoing
    }

    /// Whether this rule decides new TCP connections to `port` from anywhere.
    fn covers_ssh(&self, port: u16) -> bool {
        self.is_incoming()
            && self.iface_in.is_empty()
            && self.src == "any"
            && self.dst == "any"
            && self.sport == "any"
            && (self.proto == "tcp" || self.proto == "any")
            && port_list_covers(&self.dport, port)
    }

    /// The rule as `ufw` command words (ufw's own `get_command`, minus the
    /// comment), e.g. `limit 22/tcp` or `allow from 10.0.0.0/8 to any port 5432 proto tcp`.
    fn command(&self) -> Vec<String> {
        let mut words = vec![self.action.as_str().to_string()];
        let mut push = |w: &str| words.push(w.to_string());
        let short = self.src == "any"
            && self.dst == "any"
            && self.sport == "any"
            && self.sapp.is_empty()
            && self.iface_in.is_empty()
            && self.iface_out.is_empty()
            && self.dport != "any";
        if short {
            if self.outgoing {
                push("out");
            }
            if !self.logtype.is_empty() {
                push(&self.logtype);
            }
            if !self.dapp.is_empty() {
                push(&self.dapp);
            } else if self.proto == "any" {
                push(&self.dport);
            } else {
                push(&format!("{}/{}", self.dport, self.proto));
            }
            return words;
        }
        if !self.iface_in.is_empty() {
            push("in");
            push("on");
            push(&self.iface_in);
        }
        if !self.iface_out.is_empty() {
            push("out");
            push("on");
            push(&self.iface_out);
        } else if self.outgoing {
            push("out");
        }
        if !self.logtype.is_empty() {
            push(&self.logtype);
        }
        let mut has_end = false;
        for (word, addr, port, app) in [
            ("from", &self.src, &self.sport, &self.sapp),
            ("to", &self.dst, &self.dport, &self.dapp),
        ] {
            if addr != "any" || port != "any" || !app.is_empty() {
                has_end = true;
                push(word);
                push(addr);
                if !app.is_empty() {
                    push("app");
                    push(app);
                } else if port != "any" {
                    push("port");
                    push(port);
                }
            }
        }
        if !has_end && self.iface_in.is_empty() && self.iface_out.is_empty() {
            push("to");
            push("any");
        }
        if self.proto != "any" && self.dapp.is_empty() && self.sapp.is_empty() {
            push("proto");
            push(&self.proto);
        }
        words
    }

    /// The `To` and `Action` columns of `ufw status`: `22/tcp LIMIT`,
    /// `10.0.0.5 5432/tcp ALLOW`, `Anywhere DENY OUT`.
    fn status_line(&self) -> String {
        let mut to: Vec<String> = Vec::new();
        if self.dst != "any" {
            to.push(self.dst.clone());
        }
        if !self.dapp.is_empty() {
            to.push(self.dapp.clone());
        } else if self.dport != "any" && self.proto != "any" {
            to.push(format!("{}/{}", self.dport, self.proto));
        } else if self.dport != "any" {
            to.push(self.dport.clone());
        }
        if to.is_empty() {
            to.push("Anywhere".to_string());
        }
        if !self.iface_in.is_empty() {
            to.push(format!("on {}", self.iface_in));
        }
        let mut action = self.action.as_str().to_uppercase();
        if self.route {
            action.push_str(" FWD");
        } else if self.outgoing {
            action.push_str(" OUT");
        }
        format!("{} {action}", to.join(" "))
    }

    /// An extended regex for this rule's IPv4 `### tuple ###` record, with or
    /// without logging (incoming rules without apps or interfaces only).
    fn v4_record_pattern(&self) -> String {
        let addr = |a: &str| if a == "any" { "0.0.0.0/0" } else { a }.replace('.', "\\.");
        format!(
            "^### tuple ### {}(_log|_log-all)? {} {} {} {} {} in( |$)",
            self.action.as_str(),
            self.proto,
            self.dport,
            addr(&self.dst),
            self.sport,
            addr(&self.src)
        )
    }
}

/// Whether ufw's port list (`22`, `6000:6007`, `80,443`, `any`) includes `port`.
fn port_list_covers(list: &str, port: u16) -> bool {
    list == "any"
        || list.split(',').any(|item| match item.split_once(':') {
            Some((low, high)) => {
                low.parse().is_ok_and(|low: u16| low <= port)
                    && high.parse().is_ok_and(|high: u16| port <= high)
            }
            None => item.parse() == Ok(port),
        })
}

fn command_line(words: &[String]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| quote(w)).collect();
    format!("ufw {}", quoted.join(" "))
}

/// A rule from `rules`, in ufw's terms.
struct Desired {
    rule: UfwRule,
    comment: Option<String>,
    /// The family of `from`; `None` (any source) means every enabled family.
    source_family: Option<Family>,
}

impl Desired {
    fn families(&self, ipv6: bool) -> Vec<Family> {
        match self.source_family {
            Some(family) => vec![family],
            None if ipv6 => vec![Family::V4, Family::V6],
            None => vec![Family::V4],
        }
    }

    fn add_command(&self) -> String {
        let mut words = self.rule.command();
        if let Some(comment) = &self.comment {
            words.extend(["comment".to_string(), comment.clone()]);
        }
        command_line(&words)
    }
}

impl RuleArgs {
    fn to_desired(&self) -> Result<Desired, String> {
        let port = self.port()?;
        if port.contains(':') && self.proto == Proto::Any {
            return Err(format!(
                "port range {port} needs `proto: tcp` or `proto: udp`"
            ));
        }
        let (src, source_family) = match &self.from {
            Some(from) => {
                let (addr, family) = normalize_source(from)?;
                (addr, Some(family))
            }
            None => ("any".to_string(), None),
        };
        if let Some(comment) = &self.comment {
            if comment.contains('\'') {
                return Err(format!(
                    "comment {comment:?}: ufw does not accept a `'` in comments"
                ));
            }
        }
        Ok(Desired {
            rule: UfwRule {
                action: self.action,
                logtype: String::new(),
                route: false,
                outgoing: false,
                proto: self.proto.as_str().to_string(),
                dport: port,
                dst: "any".to_string(),
                sport: "any".to_string(),
                src,
                dapp: String::new(),
                sapp: String::new(),
                iface_in: String::new(),
                iface_out: String::new(),
            },
            comment: self.comment.clone(),
            source_family,
        })
    }

    /// `22` or a range `6000:6007`, as ufw writes ports.
    fn port(&self) -> Result<String, String> {
        let valid = |n: u64| (1..=65535).contains(&n);
        let bad = |p: &dyn std::fmt::Display| {
            format!("port {p}: use a number 1-65535 or a range like \"6000:6007\"")
        };
        match &self.port {
            PortArg::Number(n) if valid(*n) => Ok(n.to_string()),
            PortArg::Number(n) => Err(bad(n)),
            PortArg::Text(text) => {
                let number = |s: &str| {
                    s.parse::<u64>()
                        .ok()
                        .filter(|n| valid(*n) && s.bytes().all(|b| b.is_ascii_digit()))
                };
                match text.split_once(':') {
                    None => number(text).map(|n| n.to_string()).ok_or_else(|| bad(text)),
                    Some((low, high)) => match (number(low), number(high)) {
                        (Some(low), Some(high)) if low < high => Ok(format!("{low}:{high}")),
                        _ => Err(bad(text)),
                    },
                }
            }
        }
    }
}

/// The address or network in the form ufw stores it: host bits cleared, no
/// host-sized prefix (`10.0.0.5/32` is `10.0.0.5`).
fn normalize_source(from: &str) -> Result<(String, Family), String> {
    let bad = || format!("from {from:?}: use an IP address or a CIDR like 203.0.113.0/24");
    let (addr, prefix) = match from.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (from, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let bits: u32 = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => bits,
        Some(p) => p
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=bits).contains(p))
            .ok_or_else(bad)?,
    };
    let network = match ip {
        IpAddr::V4(v4) => {
            IpAddr::V4((u32::from(v4) & u32::MAX.checked_shl(32 - prefix).unwrap_or(0)).into())
        }
        IpAddr::V6(v6) => {
            IpAddr::V6((u128::from(v6) & u128::MAX.checked_shl(128 - prefix).unwrap_or(0)).into())
        }
    };
    let family = if ip.is_ipv4() { Family::V4 } else { Family::V6 };
    let text = if prefix == bits {
        network.to_string()
    } else {
        format!("{network}/{prefix}")
    };
    Ok((text, family))
}

impl Validate for Ufw {
    fn validate(&self) -> Result<(), String> {
        let desired = self.desired()?;
        let port = match self.ssh_port {
            Some(0) => return Err("ssh_port: 0 is not a port".to_string()),
            Some(port) => port,
            None if self.state == FirewallState::Enabled => {
                return Err("`ssh_port` is required with `state: enabled`, so vpsup can make sure a rule lets SSH in before the firewall goes up".to_string())
            }
            None if self.purge || self.purge_comment.is_some() => {
                return Err("`ssh_port` is required with `purge: true`, so vpsup never deletes the rule that lets SSH in".to_string())
            }
            None => return Ok(()),
        };
        // ufw applies the first matching rule, so the first one about SSH decides.
        match desired.iter().find(|d| d.rule.covers_ssh(port)) {
            Some(d) if d.rule.action.lets_in() => Ok(()),
            found => Err(format!(
                "no rule lets SSH in: list `{{ port: {port}, proto: tcp, action: limit }}` in `rules`{}; a rule with `from` does not count, it would lock out every other address",
                found.map(|d| format!(" before `{}`", d.rule.command().join(" "))).unwrap_or_default()
            )),
        }
    }
}

/// Prints `ufw missing`, or `ufw installed`, the settings lines
/// (`ENABLED=yes`, `IPV6=yes`, `DEFAULT_INPUT_POLICY="DROP"`...), then one
/// `v4 RECORD`/`v6 RECORD` line per `### tuple ###` record (`v4 unreadable`
/// when the rules file cannot be read): ufw's own files, not its human
/// `ufw status`. `vpsup status` reads the firewall with it too (`overview`).
pub fn state_probe() -> String {
    let keys = DIRECTIONS.map(|(_, key)| key).join("|");
    let records: Vec<String> = [Family::V4, Family::V6]
        .iter()
        .map(|f| {
            format!(
                "  sed -n 's/^### tuple ### /{tag} /p' {file} || echo '{tag} unreadable'",
                tag = f.tag(),
                file = f.rules_file()
            )
        })
        .collect();
    format!(
        "if command -v ufw >/dev/null 2>&1; then
  echo 'ufw installed'
  grep -hE '^(ENABLED|IPV6|{keys})=' {UFW_CONF} {UFW_DEFAULTS}
{}
else
  echo 'ufw missing'
fi",
        records.join("\n")
    )
}

/// What the probe found on the host.
#[derive(Debug, Default)]
struct HostFirewall {
    enabled: bool,
    ipv6: bool,
    /// In `DIRECTIONS` order; `None` when missing or unknown.
    policies: [Option<Policy>; 3],
    rules: Vec<StoredRule>,
}

#[derive(Debug)]
struct StoredRule {
    family: Family,
    rule: UfwRule,
    comment: String,
}

impl HostFirewall {
    fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }

    fn holds(&self, family: Family, target: &UfwRule) -> bool {
        self.rules
            .iter()
            .any(|s| s.family == family && s.rule.target() == *target)
    }

    /// Whether every family the rule belongs to holds it with this action (and
    /// comment, when one is asked for).
    fn has(&self, want: &Desired) -> bool {
        want.families(self.ipv6).into_iter().all(|family| {
            self.rules.iter().any(|s| {
                s.family == family
                    && s.rule.target() == want.rule.target()
                    && s.rule.action == want.rule.action
                    && want.comment.as_ref().is_none_or(|c| *c == s.comment)
            })
        })
    }
}

fn parse_probe(output: &str) -> Result<HostFirewall, ModuleError> {
    read_state(output)?.ok_or_else(|| {
        ModuleError::Plan(
            "ufw is not installed on the host; install it first (apt: packages [ufw])".to_string(),
        )
    })
}

/// The firewall as `vpsup status` shows it.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Overview {
    pub active: bool,
    /// While active, each rule as `ufw status` lists it, `To Action`
    /// (`22/tcp LIMIT`); an IPv6 rule that mirrors an IPv4 one is left out.
    pub rules: Vec<String>,
}

/// What `state_probe` printed, as `vpsup status` shows it; `None` when ufw is
/// not installed.
pub fn overview(probed: &str) -> Result<Option<Overview>, String> {
    let Some(host) = read_state(probed).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    // ufw lists no rules while it is off.
    let rules = if host.enabled {
        host.rules
            .iter()
            .filter(|s| s.family == Family::V4 || !host.holds(Family::V4, &s.rule.target()))
            .map(|s| s.rule.status_line())
            .collect()
    } else {
        Vec::new()
    };
    Ok(Some(Overview {
        active: host.enabled,
        rules,
    }))
}

/// What `state_probe` printed; `None` when ufw is not installed.
fn read_state(output: &str) -> Result<Option<HostFirewall>, ModuleError> {
    let mut lines = output.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next() {
        Some("ufw installed") => {}
        Some("ufw missing") => return Ok(None),
        other => {
            return Err(ModuleError::Probe(format!(
                "expected `ufw installed` or `ufw missing`, got {other:?}"
            )))
        }
    }
    let mut host = HostFirewall::default();
    for line in lines {
        if let Some((tag, record)) = line.split_once(' ') {
            let family = match tag {
                "v4" => Some(Family::V4),
                "v6" => Some(Family::V6),
                _ => None,
            };
            if let Some(family) = family {
                if record == "unreadable" {
                    return Err(ModuleError::Plan(format!(
                        "cannot read {}; the ufw task must run as root",
                        family.rules_file()
                    )));
                }
                let (rule, comment) = parse_record(record)
                    .map_err(|e| ModuleError::Probe(format!("{e} in {line:?}")))?;
                host.rules.push(StoredRule {
                    family,
                    rule,
                    comment,
                });
                continue;
            }
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ModuleError::Probe(format!("unexpected line {line:?}")));
        };
        let value = value.trim().trim_matches('"');
        match key {
            "ENABLED" => host.enabled = value == "yes",
            "IPV6" => host.ipv6 = value == "yes",
            _ => match DIRECTIONS
                .iter()
                .position(|(_, config_key)| *config_key == key)
            {
                Some(index) => host.policies[index] = Policy::from_config(value),
                None => return Err(ModuleError::Probe(format!("unexpected setting {line:?}"))),
            },
        }
    }
    Ok(Some(host))
}

/// Parses one `### tuple ###` record (without that prefix):
/// `ACTION PROTO DPORT DST SPORT SRC [DAPP SAPP] DIRECTION [comment=HEX]`, where
/// ACTION may be `route:allow_log` and DIRECTION `in`, `out`, `in_eth0`,
/// `in_eth0!out_eth1`. Records written before ufw 0.30 lack DIRECTION (`in`).
fn parse_record(record: &str) -> Result<(UfwRule, String), String> {
    let (fields, comment) = match record.split_once(" comment=") {
        Some((fields, hex)) => (fields, decode_hex(hex.trim())?),
        None => (record, String::new()),
    };
    let fields: Vec<&str> = fields.split_whitespace().collect();
    let (direction, apps) = match fields.len() {
        6 => ("in", None),
        7 => (fields[6], None),
        8 => ("in", Some((fields[6], fields[7]))),
        9 => (fields[8], Some((fields[6], fields[7]))),
        n => return Err(format!("ufw rule record with {n} fields")),
    };
    let (route, action) = match fields[0].strip_prefix("route:") {
        Some(action) => (true, action),
        None => (false, fields[0]),
    };
    let (action, logtype) = action.split_once('_').unwrap_or((action, ""));
    let (outgoing, iface_in, iface_out) = match direction.split_once('!') {
        Some((inside, outside)) => (
            false,
            inside.strip_prefix("in_").unwrap_or(inside),
            outside.strip_prefix("out_").unwrap_or(outside),
        ),
        None => match direction.split_once('_') {
            Some(("out", iface)) => (true, "", iface),
            Some((_, iface)) => (false, iface, ""),
            None => (direction == "out", "", ""),
        },
    };
    let any = |addr: &str| match addr {
        "0.0.0.0/0" | "::/0" => "any".to_string(),
        other => other.to_string(),
    };
    let app = |name: &str| {
        if name == "-" {
            String::new()
        } else {
            name.replace("%20", " ")
        }
    };
    let (dapp, sapp) = apps.map_or((String::new(), String::new()), |(d, s)| (app(d), app(s)));
    let rule = UfwRule {
        action: Action::from_record(action),
        logtype: logtype.to_string(),
        route,
        outgoing,
        proto: fields[1].to_string(),
        dport: fields[2].to_string(),
        dst: any(fields[3]),
        sport: fields[4].to_string(),
        src: any(fields[5]),
        dapp,
        sapp,
        iface_in: iface_in.to_string(),
        iface_out: iface_out.to_string(),
    };
    Ok((rule, comment))
}

/// ufw stores comments hex-encoded (UTF-8).
fn decode_hex(hex: &str) -> Result<String, String> {
    let bytes: Option<Vec<u8>> = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect();
    bytes
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .ok_or_else(|| format!("comment {hex:?} is not hex"))
}

/// Everything the plan does, in the order it must happen.
#[derive(Default)]
struct Steps {
    summary: Vec<String>,
    script: Vec<String>,
}

impl Steps {
    fn push(&mut self, summary: impl Into<String>, script: impl Into<String>) {
        self.summary.push(summary.into());
        self.script.push(script.into());
    }
}

impl Ufw {
    fn desired(&self) -> Result<Vec<Desired>, String> {
        let mut desired: Vec<Desired> = Vec::with_capacity(self.rules.len());
        for (index, args) in self.rules.iter().enumerate() {
            let rule = args
                .to_desired()
                .map_err(|e| format!("rules[{index}]: {e}"))?;
            if let Some(earlier) = desired
                .iter()
                .position(|d| d.rule.target() == rule.rule.target())
            {
                return Err(format!(
                    "rules[{earlier}] and rules[{index}] are the same rule ({}); keep one",
                    rule.rule.command()[1..].join(" ")
                ));
            }
            desired.push(rule);
        }
        Ok(desired)
    }

    /// Fails when, after the plan, the first rule deciding new SSH connections
    /// (ufw is first-match) would not let them in, in either address family.
    fn check_ssh_stays_open(
        &self,
        port: u16,
        host: &HostFirewall,
        desired: &[Desired],
        deleted: &[&StoredRule],
    ) -> Result<(), ModuleError> {
        for family in host.families() {
            // Existing rules keep their place (a listed one replaces its target
            // in place); rules ufw does not hold yet are appended.
            let kept = host
                .rules
                .iter()
                .filter(|s| s.family == family && !deleted.iter().any(|d| std::ptr::eq(*d, *s)))
                .map(|s| {
                    desired
                        .iter()
                        .find(|d| d.rule.target() == s.rule.target())
                        .map_or(&s.rule, |d| &d.rule)
                });
            let added = desired
                .iter()
                .filter(|d| {
                    d.families(host.ipv6).contains(&family) && !host.holds(family, &d.rule.target())
                })
                .map(|d| &d.rule);
            match kept.chain(added).find(|rule| rule.covers_ssh(port)) {
                Some(rule) if rule.action.lets_in() => {}
                Some(rule) => {
                    return Err(ModuleError::Plan(format!(
                        "ufw rule `{}` would come first for SSH (port {port}) over {} and lock it out; delete it from the host or from `rules` (`purge: true` deletes unlisted rules)",
                        rule.command().join(" "),
                        family.name()
                    )))
                }
                None => {
                    return Err(ModuleError::Plan(format!(
                        "no ufw rule would let SSH (port {port}) in over {}",
                        family.name()
                    )))
                }
            }
        }
        Ok(())
    }

    /// `ufw --force enable` (no prompt), behind a check that ufw really recorded
    /// the listed rule that lets SSH in (validation guarantees there is one).
    fn enable_script(&self, desired: &[Desired]) -> Result<String, ModuleError> {
        let port = self.ssh_port.unwrap_or_default();
        let Some(ssh_rule) = desired.iter().find(|d| d.rule.covers_ssh(port)) else {
            return Err(ModuleError::Plan(format!(
                "no rule in `rules` lets SSH (port {port}) in"
            )));
        };
        Ok(format!(
            "grep -Eq {} {} || {{ echo 'vpsup: no ufw rule lets SSH (port {port}) in; not enabling the firewall' >&2; exit 1; }}\nufw --force enable",
            quote(&ssh_rule.rule.v4_record_pattern()),
            Family::V4.rules_file()
        ))
    }
}

impl Module for Ufw {
    fn probe(&self, _opts: &ProbeOptions) -> String {
        state_probe()
    }

    fn plan(&self, probed: &str, _ctx: &PlanContext) -> Result<Plan, ModuleError> {
        let host = parse_probe(probed)?;
        let desired = self.desired().map_err(ModuleError::Args)?;
        let mut steps = Steps::default();

        if self.state == FirewallState::Disabled && host.enabled {
            steps.push("disable", "ufw disable");
        }
        // New rules go in before anything is deleted or tightened, so the rule
        // that lets SSH in is there before the one it replaces goes away.
        for want in desired.iter().filter(|d| !host.has(d)) {
            steps.push(want.rule.command().join(" "), want.add_command());
        }
        let deleted: Vec<&StoredRule> = host
            .rules
            .iter()
            .filter(|s| {
                (self.purge || self.purge_comment.as_ref() == Some(&s.comment))
                    && s.rule.is_incoming()
                    && !desired.iter().any(|d| d.rule.target() == s.rule.target())
            })
            .collect();
        // An IPv4 rule and its IPv6 twin go with one command.
        let mut deletions: Vec<Vec<String>> = Vec::new();
        for stored in &deleted {
            let words = stored.rule.command();
            if !deletions.contains(&words) {
                deletions.push(words);
            }
        }
        for words in deletions {
            let mut command = vec!["delete".to_string()];
            command.extend(words);
            steps.push(command.join(" "), command_line(&command));
        }
        for ((direction, _), (want, have)) in DIRECTIONS
            .iter()
            .zip(self.defaults.wanted().into_iter().zip(host.policies))
        {
            if let Some(policy) = want.filter(|w| Some(*w) != have) {
                let words = format!("default {} {direction}", policy.as_str());
                steps.push(words.clone(), format!("ufw {words}"));
            }
        }

        let active_after = match self.state {
            FirewallState::Enabled => true,
            FirewallState::Disabled => false,
            FirewallState::Unchanged => host.enabled,
        };
        if let Some(port) = self.ssh_port.filter(|_| active_after) {
            self.check_ssh_stays_open(port, &host, &desired, &deleted)?;
        }
        if self.state == FirewallState::Enabled && !host.enabled {
            steps.push("enable", self.enable_script(&desired)?);
        }

        if steps.script.is_empty() {
            return Ok(Plan::ok());
        }
        Ok(Plan::change(Change::new(
            steps.summary.join(", "),
            steps.script.join("\n"),
        )))
    }

    /// `package:ufw` too, so installing ufw earlier in the play gets this task
    /// probed again.
    fn scope(&self) -> Scope {
        Scope::Keys(vec!["ufw".to_string(), "package:ufw".to_string()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing;

    const ARGS: &str = "
ssh_port: 22
defaults: { incoming: deny, outgoing: allow, routed: deny }
rules:
  - { port: 22, proto: tcp, action: limit, comment: ssh }
  - { port: 80, proto: tcp, action: allow }
state: enabled
";

    /// A fresh Debian install of ufw 0.36: shipped settings, no rules, off.
    const FRESH: &str = "ufw installed
ENABLED=no
IPV6=yes
DEFAULT_INPUT_POLICY=\"DROP\"
DEFAULT_OUTPUT_POLICY=\"ACCEPT\"
DEFAULT_FORWARD_POLICY=\"DROP\"
";

    /// After `ufw limit 22/tcp comment 'ssh'`, `ufw allow 80/tcp`, `ufw enable`.
    const CONVERGED: &str = "ufw installed
ENABLED=yes
IPV6=yes
DEFAULT_INPUT_POLICY=\"DROP\"
DEFAULT_OUTPUT_POLICY=\"ACCEPT\"
DEFAULT_FORWARD_POLICY=\"DROP\"
v4 limit tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=737368
v4 allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in
v6 limit tcp 22 ::/0 any ::/0 in comment=737368
v6 allow tcp 80 ::/0 any ::/0 in
";

    const ENABLE: &str = "grep -Eq '^### tuple ### limit(_log|_log-all)? tcp 22 0\\.0\\.0\\.0/0 any 0\\.0\\.0\\.0/0 in( |$)' /etc/ufw/user.rules || { echo 'vpsup: no ufw rule lets SSH (port 22) in; not enabling the firewall' >&2; exit 1; }
ufw --force enable";

    fn build(yaml: &str) -> Box<dyn Module> {
        testing::build_from_yaml("ufw", yaml).unwrap()
    }

    fn change(yaml: &str, probed: &str) -> Change {
        let plan = testing::plan(&*build(yaml), probed).unwrap();
        assert_eq!(plan.changes.len(), 1, "{plan:?}");
        plan.changes.into_iter().next().unwrap()
    }

    fn plan_error(yaml: &str, probed: &str) -> String {
        testing::plan(&*build(yaml), probed)
            .unwrap_err()
            .to_string()
    }

    fn args_error(yaml: &str) -> String {
        testing::build_from_yaml("ufw", yaml)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn fresh_host_gets_rules_first_and_enable_last() {
        let c = change(ARGS, FRESH);
        assert_eq!(c.summary, "limit 22/tcp, allow 80/tcp, enable");
        assert_eq!(
            c.script,
            format!("ufw limit 22/tcp comment ssh\nufw allow 80/tcp\n{ENABLE}")
        );
    }

    #[test]
    fn converged_host_is_ok() {
        assert!(testing::plan(&*build(ARGS), CONVERGED).unwrap().is_ok());
    }

    #[test]
    fn planning_against_what_the_script_leaves_is_ok() {
        let yaml = "
ssh_port: 2222
rules:
  - { port: 2222, action: limit }
  - { port: 53, proto: any }
  - { port: \"6000:6007\", proto: udp, action: deny, comment: 'x11 (old)' }
  - { port: 5432, from: 10.1.2.3/8, comment: db }
  - { port: 5432, from: \"2001:DB8::1/128\" }
state: enabled
";
        let module = build(yaml);
        let c = change(yaml, FRESH);
        assert_eq!(
            c.script,
            "ufw limit 2222/tcp
ufw allow 53
ufw deny 6000:6007/udp comment 'x11 (old)'
ufw allow from 10.0.0.0/8 to any port 5432 proto tcp comment db
ufw allow from 2001:db8::1 to any port 5432 proto tcp
grep -Eq '^### tuple ### limit(_log|_log-all)? tcp 2222 0\\.0\\.0\\.0/0 any 0\\.0\\.0\\.0/0 in( |$)' /etc/ufw/user.rules || { echo 'vpsup: no ufw rule lets SSH (port 2222) in; not enabling the firewall' >&2; exit 1; }
ufw --force enable"
        );
        // What ufw records for those commands (comments hex-encoded).
        let after = "ufw installed\nENABLED=yes\nIPV6=yes
v4 limit tcp 2222 0.0.0.0/0 any 0.0.0.0/0 in
v4 allow any 53 0.0.0.0/0 any 0.0.0.0/0 in
v4 deny udp 6000:6007 0.0.0.0/0 any 0.0.0.0/0 in comment=78313120286f6c6429
v4 allow tcp 5432 0.0.0.0/0 any 10.0.0.0/8 in comment=6462
v6 limit tcp 2222 ::/0 any ::/0 in
v6 allow any 53 ::/0 any ::/0 in
v6 deny udp 6000:6007 ::/0 any ::/0 in comment=78313120286f6c6429
v6 allow tcp 5432 ::/0 any 2001:db8::1 in
";
        assert!(testing::plan(&*module, after).unwrap().is_ok());
    }

    #[test]
    fn enabling_alone_when_rules_are_there() {
        let c = change(ARGS, &CONVERGED.replace("ENABLED=yes", "ENABLED=no"));
        assert_eq!((c.summary.as_str(), c.script.as_str()), ("enable", ENABLE));
    }

    #[test]
    fn defaults_change_after_the_rules() {
        let probed = CONVERGED
            .replace("INPUT_POLICY=\"DROP\"", "INPUT_POLICY=\"ACCEPT\"")
            .replace("DEFAULT_FORWARD_POLICY=\"DROP\"\n", "")
            .replace("v4 allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in\n", "");
        let c = change(ARGS, &probed);
        assert_eq!(
            c.summary,
            "allow 80/tcp, default deny incoming, default deny routed"
        );
        assert_eq!(
            c.script,
            "ufw allow 80/tcp\nufw default deny incoming\nufw default deny routed"
        );
    }

    #[test]
    fn action_and_comment_changes_replace_the_rule_in_place() {
        let probed = CONVERGED.replace("limit tcp 22", "allow tcp 22");
        let c = change(ARGS, &probed);
        assert_eq!(
            (c.summary.as_str(), c.script.as_str()),
            ("limit 22/tcp", "ufw limit 22/tcp comment ssh")
        );
        let probed = CONVERGED.replace("comment=737368", "comment=6f6c64");
        assert_eq!(change(ARGS, &probed).script, "ufw limit 22/tcp comment ssh");
        // Without a `comment`, whatever comment the rule has is fine.
        let probed = CONVERGED.replace(" 0.0.0.0/0 in\n", " 0.0.0.0/0 in comment=776562\n");
        assert!(testing::plan(&*build(ARGS), &probed).unwrap().is_ok());
    }

    #[test]
    fn a_rule_missing_its_ipv6_twin_is_added_again_unless_ipv6_is_off() {
        let probed = CONVERGED.replace("v6 allow tcp 80 ::/0 any ::/0 in\n", "");
        assert_eq!(change(ARGS, &probed).script, "ufw allow 80/tcp");
        let probed = probed.replace("IPV6=yes", "IPV6=no");
        assert!(testing::plan(&*build(ARGS), &probed).unwrap().is_ok());
    }

    #[test]
    fn purge_deletes_unlisted_incoming_rules_after_adding_and_keeps_out_and_route_rules() {
        let yaml = format!("{ARGS}purge: true\n");
        let probed = "ufw installed
ENABLED=yes
IPV6=yes
DEFAULT_INPUT_POLICY=\"DROP\"
DEFAULT_OUTPUT_POLICY=\"ACCEPT\"
DEFAULT_FORWARD_POLICY=\"DROP\"
v4 allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 OpenSSH - in
v4 allow tcp 8080 0.0.0.0/0 any 0.0.0.0/0 in comment=6f6c64
v4 allow_log tcp 22 0.0.0.0/0 any 0.0.0.0/0 in_eth0
v4 allow any 53 0.0.0.0/0 any 0.0.0.0/0 out
v4 route:allow any any 0.0.0.0/0 any 0.0.0.0/0 in_eth0!out_docker0
v4 deny any any 0.0.0.0/0 any 192.0.2.7 in
v4 allow tcp 80,443 0.0.0.0/0 any 0.0.0.0/0 Nginx%20Full - in
v6 allow tcp 22 ::/0 any ::/0 OpenSSH - in
v6 allow tcp 8080 ::/0 any ::/0 in comment=6f6c64
v6 allow any 53 ::/0 any ::/0 out
";
        let c = change(&yaml, probed);
        assert_eq!(
            c.summary,
            "limit 22/tcp, allow 80/tcp, delete allow OpenSSH, delete allow 8080/tcp, \
             delete allow in on eth0 log to any port 22 proto tcp, delete deny from 192.0.2.7, delete allow Nginx Full"
        );
        assert_eq!(
            c.script,
            "ufw limit 22/tcp comment ssh
ufw allow 80/tcp
ufw delete allow OpenSSH
ufw delete allow 8080/tcp
ufw delete allow in on eth0 log to any port 22 proto tcp
ufw delete deny from 192.0.2.7
ufw delete allow 'Nginx Full'"
        );
    }

    /// A port dropped from the config is closed; a rule with another comment
    /// (someone else's) stays.
    #[test]
    fn purge_comment_deletes_only_the_unlisted_rules_carrying_it() {
        let yaml = format!("{ARGS}purge_comment: vpsup init allow\n");
        // 7670737570... is "vpsup init allow"; 6f6c64 is "old".
        let tagged = "comment=767073757020696e697420616c6c6f77";
        let probed = format!(
            "{CONVERGED}v4 allow tcp 8080 0.0.0.0/0 any 0.0.0.0/0 in {tagged}
v6 allow tcp 8080 ::/0 any ::/0 in {tagged}
v4 allow udp 51820 0.0.0.0/0 any 0.0.0.0/0 in comment=6f6c64
v4 allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in {tagged}
"
        );
        let c = change(&yaml, &probed);
        assert_eq!(c.script, "ufw delete allow 8080/tcp");
        let err = args_error("rules: [{ port: 22 }]\npurge_comment: x\n");
        assert!(err.contains("`ssh_port` is required"), "{err}");
    }

    #[test]
    fn an_earlier_rule_that_blocks_ssh_stops_the_plan_unless_purged() {
        let probed = format!(
            "{FRESH}v4 deny any 22 0.0.0.0/0 any 0.0.0.0/0 in\nv6 deny any 22 ::/0 any ::/0 in\n"
        );
        let err = plan_error(ARGS, &probed);
        assert!(
            err.contains("`deny 22` would come first for SSH (port 22) over IPv4"),
            "{err}"
        );
        let c = change(&format!("{ARGS}purge: true\n"), &probed);
        assert_eq!(
            c.summary,
            "limit 22/tcp, allow 80/tcp, delete deny 22, enable"
        );
        // A deny for one source only, or for another interface, does not lock everyone out.
        let probed = format!("{FRESH}v4 deny tcp 22 0.0.0.0/0 any 192.0.2.0/24 in\nv4 deny tcp 22 0.0.0.0/0 any 0.0.0.0/0 in_eth1\n");
        assert!(change(ARGS, &probed).script.ends_with("ufw --force enable"));
        // A listed rule with the same target replaces the deny in place.
        let probed = format!(
            "{FRESH}v4 deny tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\nv6 deny tcp 22 ::/0 any ::/0 in\n"
        );
        assert!(change(ARGS, &probed)
            .script
            .starts_with("ufw limit 22/tcp comment ssh\n"));
    }

    #[test]
    fn the_ssh_check_also_guards_an_already_active_firewall() {
        let yaml = "ssh_port: 22\nrules: [{ port: 22 }]\n";
        let probed = CONVERGED.replace(
            "limit tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=737368",
            "reject any 22:23 0.0.0.0/0 any 0.0.0.0/0 in",
        );
        assert!(plan_error(yaml, &probed).contains("`reject 22:23` would come first"));
        // Once disabled, nothing can lock anyone out.
        let c = change(&format!("{yaml}state: disabled\n"), &probed);
        assert_eq!(c.script, "ufw disable\nufw allow 22/tcp");
    }

    #[test]
    fn state_disabled_turns_it_off_first_and_unchanged_leaves_it() {
        let c = change(
            &ARGS.replace("state: enabled", "state: disabled"),
            CONVERGED,
        );
        assert_eq!(
            (c.summary.as_str(), c.script.as_str()),
            ("disable", "ufw disable")
        );
        let yaml = "rules: [{ port: 443 }]\n";
        assert_eq!(change(yaml, FRESH).script, "ufw allow 443/tcp");
    }

    #[test]
    fn rule_records_parse_into_ufw_commands() {
        let command = |record: &str| parse_record(record).unwrap().0.command().join(" ");
        assert_eq!(
            command("limit tcp 22 0.0.0.0/0 any 0.0.0.0/0 in"),
            "limit 22/tcp"
        );
        assert_eq!(command("allow udp 1194 ::/0 any ::/0 in"), "allow 1194/udp");
        assert_eq!(command("allow any 80 0.0.0.0/0 any 0.0.0.0/0"), "allow 80");
        assert_eq!(
            command("deny_log-all tcp 25 0.0.0.0/0 any 0.0.0.0/0 out"),
            "deny out log-all 25/tcp"
        );
        assert_eq!(
            command("allow any any 0.0.0.0/0 any 0.0.0.0/0 in_wg0"),
            "allow in on wg0"
        );
        assert_eq!(
            command("allow any any 0.0.0.0/0 any 0.0.0.0/0 in"),
            "allow to any"
        );
        assert_eq!(
            command("allow tcp 5432 172.17.0.1 any 172.16.0.0/12 in"),
            "allow from 172.16.0.0/12 to 172.17.0.1 port 5432 proto tcp"
        );
        assert_eq!(
            command("allow tcp 22 0.0.0.0/0 any 10.0.0.0/8 OpenSSH - in"),
            "allow from 10.0.0.0/8 to any app OpenSSH"
        );
        let (_, comment) =
            parse_record("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=737368206b6579c3a9")
                .unwrap();
        assert_eq!(comment, "ssh keyé");
        assert!(parse_record("allow tcp 22 0.0.0.0/0").is_err());
        assert!(parse_record("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=zz").is_err());
    }

    #[test]
    fn sources_are_normalized_like_ufw_does() {
        assert_eq!(
            normalize_source("10.1.2.3/8"),
            Ok(("10.0.0.0/8".into(), Family::V4))
        );
        assert_eq!(
            normalize_source("203.0.113.7/32"),
            Ok(("203.0.113.7".into(), Family::V4))
        );
        assert_eq!(
            normalize_source("2001:DB8:0:0::1/64"),
            Ok(("2001:db8::/64".into(), Family::V6))
        );
        assert!(normalize_source("10.0.0.0/0").is_err());
        assert!(normalize_source("10.0.0.0/33").is_err());
        assert!(normalize_source("example.com").is_err());
        assert!(
            port_list_covers("80,20:30", 22)
                && !port_list_covers("80,443", 22)
                && port_list_covers("any", 22)
        );
    }

    #[test]
    fn arguments_are_validated() {
        let cases = [
            (
                "rules: [{ port: 22 }]\nstate: enabled\n",
                "`ssh_port` is required with `state: enabled`",
            ),
            (
                "rules: [{ port: 22 }]\npurge: true\n",
                "`ssh_port` is required with `purge: true`",
            ),
            (
                "ssh_port: 22\nrules: [{ port: 80 }]\n",
                "no rule lets SSH in",
            ),
            (
                "ssh_port: 22\nrules: [{ port: 22, proto: udp }]\n",
                "no rule lets SSH in",
            ),
            (
                "ssh_port: 22\nrules: [{ port: 22, from: 10.0.0.0/8 }]\n",
                "a rule with `from` does not count",
            ),
            (
                "ssh_port: 22\nrules: [{ port: 22, proto: any, action: deny }, { port: 22 }]\n",
                "before `deny 22`",
            ),
            (
                "rules: [{ port: 80 }, { port: \"80\", action: deny }]\n",
                "rules[0] and rules[1] are the same rule (80/tcp)",
            ),
            ("rules: [{ port: 0 }]\n", "rules[0]: port 0"),
            ("rules: [{ port: 70000 }]\n", "port 70000"),
            ("rules: [{ port: \"7:5\" }]\n", "port 7:5"),
            ("rules: [{ port: \"+80\" }]\n", "port +80"),
            (
                "rules: [{ port: \"6000:6007\", proto: any }]\n",
                "needs `proto: tcp` or `proto: udp`",
            ),
            (
                "rules: [{ port: 80, comment: \"it's\" }]\n",
                "does not accept a `'`",
            ),
            ("rules: [{ port: 80, from: nowhere }]\n", "from \"nowhere\""),
            (
                "rules: [{ port: 80, proto: icmp }]\n",
                "unknown variant `icmp`",
            ),
            ("ssh_port: 0\n", "ssh_port: 0"),
            ("state: running\n", "unknown variant `running`"),
            ("defaults: { incoming: drop }\n", "unknown variant `drop`"),
            (
                "rules: [{ port: 80, ports: 81 }]\n",
                "unknown field `ports`",
            ),
        ];
        for (yaml, expected) in cases {
            let err = args_error(yaml);
            assert!(err.contains(expected), "{yaml}: {err}");
        }
    }

    #[test]
    fn status_overview_lists_the_active_rules_without_their_ipv6_twins() {
        assert_eq!(
            overview(CONVERGED).unwrap(),
            Some(Overview {
                active: true,
                rules: vec!["22/tcp LIMIT".into(), "80/tcp ALLOW".into()],
            })
        );
        let more = format!(
            "{CONVERGED}v4 allow tcp 5432 10.0.0.5 any 10.0.0.0/8 in\nv6 allow udp 51820 ::/0 any 2001:db8::/32 in_wg0\nv4 deny any any 0.0.0.0/0 any 0.0.0.0/0 out\nv4 route:allow any any 0.0.0.0/0 any 0.0.0.0/0 in_eth1!out_eth0\n"
        );
        assert_eq!(
            overview(&more).unwrap().unwrap().rules[2..],
            [
                "10.0.0.5 5432/tcp ALLOW",
                "51820/udp on wg0 ALLOW",
                "Anywhere DENY OUT",
                "Anywhere on eth1 ALLOW FWD",
            ]
        );
        // Off: ufw lists no rules, whatever it holds.
        let off = CONVERGED.replace("ENABLED=yes", "ENABLED=no");
        assert_eq!(
            overview(&off).unwrap(),
            Some(Overview {
                active: false,
                rules: Vec::new()
            })
        );
        assert_eq!(overview("ufw missing\n").unwrap(), None);
        assert!(overview("Status: active\n").is_err());
    }

    #[test]
    fn unusable_probe_output_is_reported() {
        let err = plan_error(ARGS, "ufw missing\n");
        assert!(err.contains("ufw is not installed on the host"), "{err}");
        let err = plan_error(ARGS, &format!("{FRESH}v4 unreadable\n"));
        assert!(err.contains("cannot read /etc/ufw/user.rules"), "{err}");
        let probe_error = |probed: &str| {
            matches!(
                testing::plan(&*build(ARGS), probed),
                Err(ModuleError::Probe(_))
            )
        };
        assert!(probe_error(""));
        assert!(probe_error(&format!("{FRESH}v4 allow tcp\n")));
        assert!(probe_error(&format!("{FRESH}garbage\n")));
        assert!(probe_error(&format!("{FRESH}LOGLEVEL=low\n")));
    }

    fn run(script: &str, path: &str) -> std::process::Output {
        std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .env("PATH", path)
            .output()
            .unwrap()
    }

    #[test]
    fn probe_says_missing_on_a_host_without_ufw() {
        let module = build(ARGS);
        let out = run(
            &module.probe(&crate::modules::testing::probe_options()),
            "/nonexistent",
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ufw missing\n");
    }

    /// Runs the real probe against ufw's files laid out in a temp dir, with a
    /// stand-in `ufw` on PATH (the real one is never run here).
    #[test]
    fn probe_reads_ufw_files() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(etc.join("ufw")).unwrap();
        std::fs::create_dir_all(etc.join("default")).unwrap();
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        let fake_ufw = root.path().join("bin/ufw");
        std::fs::write(&fake_ufw, "#!/bin/sh\nexit 1\n").unwrap();
        let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&fake_ufw, executable).unwrap();
        std::fs::write(
            etc.join("ufw/ufw.conf"),
            "# /etc/ufw/ufw.conf\n#\n\n# Set to yes to start on boot.\nENABLED=yes\n\nLOGLEVEL=low\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("default/ufw"),
            "# /etc/default/ufw\n#\nIPV6=yes\n\n# Set the default input policy\nDEFAULT_INPUT_POLICY=\"DROP\"\n\
             DEFAULT_OUTPUT_POLICY=\"ACCEPT\"\nDEFAULT_FORWARD_POLICY=\"DROP\"\nDEFAULT_APPLICATION_POLICY=\"SKIP\"\n\
             MANAGE_BUILTINS=no\nIPT_SYSCTL=/etc/ufw/sysctl.conf\nIPT_MODULES=\"\"\n",
        )
        .unwrap();
        let rules = |prefix: &str, any: &str| {
            format!(
                "*filter\n:{prefix}-user-input - [0:0]\n:{prefix}-user-output - [0:0]\n### RULES ###\n\n\
                 ### tuple ### limit tcp 22 {any} any {any} in comment=737368\n\
                 -A {prefix}-user-input -p tcp --dport 22 -m conntrack --ctstate NEW -m recent --set\n\
                 -A {prefix}-user-input -p tcp --dport 22 -j {prefix}-user-limit-accept\n\n\
                 ### tuple ### allow tcp 80 {any} any {any} in\n\
                 -A {prefix}-user-input -p tcp --dport 80 -j ACCEPT\n\n### END RULES ###\nCOMMIT\n"
            )
        };
        std::fs::write(etc.join("ufw/user.rules"), rules("ufw", "0.0.0.0/0")).unwrap();
        std::fs::write(etc.join("ufw/user6.rules"), rules("ufw6", "::/0")).unwrap();
        let etc_dir = format!("{}/", etc.display());
        let module = build(ARGS);
        let probe = module
            .probe(&crate::modules::testing::probe_options())
            .replace("/etc/", &etc_dir);
        let path = format!("{}:/usr/bin:/bin", root.path().join("bin").display());
        let out = String::from_utf8(run(&probe, &path).stdout).unwrap();
        assert_eq!(out, CONVERGED);
        assert!(testing::plan(&*module, &out).unwrap().is_ok());

        // The guard before `ufw --force enable` passes on these files...
        let c = change(ARGS, &CONVERGED.replace("ENABLED=yes", "ENABLED=no"));
        let guard = c.script.lines().next().unwrap().replace("/etc/", &etc_dir);
        assert!(run(&guard, "/usr/bin:/bin").status.success());
        // ...and fails when the SSH rule did not land.
        std::fs::write(
            etc.join("ufw/user.rules"),
            rules("ufw", "0.0.0.0/0").replace("limit tcp 22", "allow tcp 22"),
        )
        .unwrap();
        let out = run(&guard, "/usr/bin:/bin");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("not enabling the firewall"));
        // A logged limit rule lets SSH in just the same.
        std::fs::write(
            etc.join("ufw/user.rules"),
            rules("ufw", "0.0.0.0/0").replace("limit tcp 22", "limit_log tcp 22"),
        )
        .unwrap();
        assert!(run(&guard, "/usr/bin:/bin").status.success());
    }

    #[test]
    fn scope_is_the_firewall_and_its_package() {
        assert_eq!(
            build(ARGS).scope(),
            Scope::Keys(vec!["ufw".into(), "package:ufw".into()])
        );
    }
}
