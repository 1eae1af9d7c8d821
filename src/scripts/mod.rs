//! Long shell scripts vpsup runs on hosts, kept as `.sh` files beside this
//! module rather than in Rust strings, so they read as shell and are checked
//! as shell: `sh -n` here, shellcheck in tests/templates.rs.
//!
//! A file starts with comment lines saying what it does; those stay here, as
//! do `# shellcheck` directives: `fill` drops them (and the file's last
//! newline), so the host gets only the script. `{{name}}` marks text its
//! caller fills in, already quoted for the shell where it needs to be.

/// One script file and its placeholders.
pub struct Script {
    pub file: &'static str,
    text: &'static str,
    /// A value for each placeholder that makes a typical script: what the
    /// checks fill in.
    pub sample: &'static [(&'static str, &'static str)],
}

/// `vpsup_apt_get` and the lock-holder lookup it reports with (modules::apt).
pub const APT_GET: Script = Script {
    file: "apt_get.sh",
    text: include_str!("apt_get.sh"),
    sample: &[("timeout", "300")],
};

/// Takes a host lock, or takes over a dead run's (hostlock).
pub const HOSTLOCK_ACQUIRE: Script = Script {
    file: "hostlock_acquire.sh",
    text: include_str!("hostlock_acquire.sh"),
    sample: &[
        (
            "guard",
            "exec 9< /srv/vpsup || exit 125\nflock -w 10 9 || exit 125",
        ),
        ("lock", "/srv/vpsup/doctor/deploy.lock"),
        ("steps", "  running="),
        (
            "by_age",
            "\n  elif [ \"$expired\" = - ] && [ \"$age\" -gt 3600 ]; then dead=too-old",
        ),
        ("pid", "echo 4242 > /srv/vpsup/doctor/deploy.lock/pid\n  "),
        ("lease", "120"),
        ("then_script", "echo ready"),
    ],
};

/// `vpsup_proc`: a process's pid, state and start time from its stat file (hostlock).
pub const PROC_STAT: Script = Script {
    file: "proc_stat.sh",
    text: include_str!("proc_stat.sh"),
    sample: &[],
};

/// Switches a certificate to its new version in the store (acme::store).
pub const ACME_SWITCH_CERT: Script = Script {
    file: "acme_switch_cert.sh",
    text: include_str!("acme_switch_cert.sh"),
    sample: &[
        ("certs", "/etc/vpsup/acme/certs"),
        ("name", "doctor.example.com"),
        ("version", ".versions/doctor.example.com/3"),
        ("marker", "/etc/vpsup/acme/reload-pending"),
    ],
};

/// Lists the certificates in the store (acme::store).
pub const ACME_LISTING: Script = Script {
    file: "acme_listing.sh",
    text: include_str!("acme_listing.sh"),
    sample: &[
        ("store", "/etc/vpsup/acme"),
        ("reload_pending", "reload-pending"),
    ],
};

/// Generates an app's missing secrets (deploy::secrets).
pub const SECRETS_ENSURE: Script = Script {
    file: "secrets_ensure.sh",
    text: include_str!("secrets_ensure.sh"),
    sample: &[
        ("file", "/srv/vpsup/doctor/shared/secrets.env"),
        ("names", "'DB_PASSWORD' 'SECRET_KEY'"),
        ("length", "40"),
    ],
};

/// Everything one `vpsup watch --local` run looks at (watch::gather).
pub const WATCH_GATHER: Script = Script {
    file: "watch_gather.sh",
    text: include_str!("watch_gather.sh"),
    sample: &[
        ("marker", "@@vpsup-0123456789abcdef"),
        (
            "sites_curl",
            "curl -k -s --max-time 10 -o /dev/null --resolve 'shop.example.com:443:127.0.0.1' -w '\\n@@vpsup-0123456789abcdef site shop shop.example.com\\n%{http_code}\\n%{errormsg}\\n'\"$certs\" 'https://shop.example.com:443/healthz' 2>/dev/null",
        ),
        ("sites", "shop 'shop.example.com' '/healthz' 127.0.0.1 443"),
        (
            "projects",
            "shop vpsup-shop /srv/vpsup/shop/current/.vpsup/release.json /srv/vpsup/shop/serving vpsup_blue-shop vpsup_green-shop",
        ),
        ("docker_socket", "/var/run/docker.sock"),
        ("docker_cache", "/run/vpsup/watch/docker-api"),
        ("renew_service", "vpsup-renew-certs.service"),
        ("backups", "true"),
    ],
};

/// Every script, for the checks.
pub const ALL: &[&Script] = &[
    &APT_GET,
    &HOSTLOCK_ACQUIRE,
    &PROC_STAT,
    &ACME_SWITCH_CERT,
    &ACME_LISTING,
    &SECRETS_ENSURE,
    &WATCH_GATHER,
];

impl Script {
    /// The script the host gets: without the header comment and shellcheck
    /// directives, each `{{name}}` replaced by its value. A placeholder
    /// without a value is a bug in the caller.
    pub fn fill(&self, values: &[(&str, &str)]) -> String {
        let mut body = self.text;
        while body.starts_with('#') {
            body = body.split_once('\n').map_or("", |(_, rest)| rest);
        }
        let script: Vec<&str> = body
            .lines()
            .filter(|line| !line.trim_start().starts_with("# shellcheck "))
            .collect();
        self.fill_in(&script.join("\n"), values)
    }

    /// `fill` with the sample values.
    pub fn sample(&self) -> String {
        self.fill(self.sample)
    }

    /// The whole file, comments and directives included, with the sample
    /// values: what shellcheck reads.
    pub fn lint_sample(&self) -> String {
        self.fill_in(self.text, self.sample)
    }

    fn fill_in(&self, text: &str, values: &[(&str, &str)]) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let name = after.find("}}").map(|end| &after[..end]);
            match name.filter(|n| is_placeholder(n)) {
                Some(name) => {
                    let value = values
                        .iter()
                        .find(|(n, _)| *n == name)
                        .unwrap_or_else(|| panic!("{}: no value for {{{{{name}}}}}", self.file));
                    out.push_str(value.1);
                    rest = &after[name.len() + 2..];
                }
                None => {
                    out.push_str("{{");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

fn is_placeholder(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: Script = Script {
        file: "demo.sh",
        text:
            "# demo: says {{word}}\n# twice\necho {{word}} {{word}}\n[ -n \"${x}\" ] || { echo; }\n",
        sample: &[("word", "hi")],
    };

    #[test]
    fn the_header_goes_and_placeholders_are_filled_once() {
        assert_eq!(
            DEMO.fill(&[("word", "{{word}}")]),
            "echo {{word}} {{word}}\n[ -n \"${x}\" ] || { echo; }"
        );
        assert_eq!(DEMO.sample(), "echo hi hi\n[ -n \"${x}\" ] || { echo; }");
    }

    #[test]
    #[should_panic(expected = "demo.sh: no value for {{word}}")]
    fn a_missing_value_is_a_bug() {
        DEMO.fill(&[]);
    }

    #[test]
    fn every_sample_fills_every_placeholder_and_is_valid_sh() {
        for script in ALL {
            let text = script.sample();
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", &text])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                script.file,
                String::from_utf8_lossy(&out.stderr)
            );
            for (name, _) in script.sample {
                assert!(
                    script.text.contains(&format!("{{{{{name}}}}}")),
                    "{}: the sample fills {name}, which it does not use",
                    script.file
                );
            }
        }
    }
}
