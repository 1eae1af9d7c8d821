//! What the host's own renewal timer needs to renew without the operator: the
//! `[acme]` settings, with the files they point at (the extra trusted root, the
//! TSIG secret) copied beside them. Every operator run that uses `[acme]`
//! (`renew-certs`, `deploy`) brings these up to date; `vpsup renew-certs
//! --local`, which the timer runs, reads them.
//!
//! Several apps share one host and its store, each with its own `[acme]` (one
//! HTTP-01 only, another with `[acme.dns]` for its wildcard): each app's
//! settings are kept apart, with the certificates they renew (one per site).
//! A project without `[app]` (renew-certs only) keeps the host-wide
//! `renew.toml`, which renews every certificate no app claims. They live in
//! the certificate store (`[acme] store`, 0700 root), beside what they renew:
//!
//! ```text
//! /etc/vpsup/acme/renew.toml                    0600  [acme] of a project without [app]
//! /etc/vpsup/acme/extra-root.pem                0644  its [acme] extra_root, when set
//! /etc/vpsup/acme/dns.secret                    0600  its [acme.dns] secret_file, when set
//! /etc/vpsup/acme/renew.d/<app>.toml            0600  [renews] app and certificates, and its [acme]
//! /etc/vpsup/acme/renew.d/<app>.extra-root.pem  0644
//! /etc/vpsup/acme/renew.d/<app>.dns.secret      0600
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store::cert_name;
use crate::config::{AcmeConfig, Config};
use crate::transport::script::{self, quote};
use crate::transport::{ExecRequest, FileMeta, Transport, TransportError};

const CONFIG_FILE: &str = "renew.toml";
const APPS_DIR: &str = "renew.d";
const EXTRA_ROOT_FILE: &str = "extra-root.pem";
const DNS_SECRET_FILE: &str = "dns.secret";

/// The host-wide settings file (a project without `[app]`), for the store at `store`.
pub fn config_path(store: &str) -> String {
    format!("{}/{CONFIG_FILE}", store.trim_end_matches('/'))
}

/// The directory of the apps' settings in the store at `store`.
pub fn apps_dir(store: &str) -> String {
    format!("{}/{APPS_DIR}", store.trim_end_matches('/'))
}

/// The store whose apps keep their settings beside `renew_toml`, a
/// host-wide settings file that does not exist (a host whose every project
/// has `[app]`): its directory, when that holds `renew.d/*.toml`.
pub fn store_with_only_apps(renew_toml: &Path) -> Option<String> {
    if renew_toml.file_name()? != CONFIG_FILE {
        return None;
    }
    let store = renew_toml.parent()?;
    let has_apps = std::fs::read_dir(store.join(APPS_DIR))
        .ok()?
        .filter_map(Result::ok)
        .any(|e| e.path().extension().is_some_and(|x| x == "toml"));
    has_apps.then(|| store.display().to_string())
}

/// A shell condition (run as root) that holds when the store at `store` has
/// settings for the timer: host-wide, or some app's.
pub fn any_settings_test(store: &str) -> String {
    format!(
        "{{ [ -e {} ] || ls {}/*.toml >/dev/null 2>&1; }}",
        quote(&config_path(store)),
        quote(&apps_dir(store))
    )
}

/// The certificates an app renews with its own settings: one per site,
/// named as the store names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub app: String,
    pub certificates: Vec<String>,
}

impl Claim {
    /// The claim of a project's app, from its `[[sites]]`; `None` without `[app]`.
    pub fn of(config: &Config) -> Option<Claim> {
        let app = config.app.as_ref()?;
        Some(Claim {
            app: app.name.to_string(),
            certificates: config
                .sites
                .iter()
                .map(|site| cert_name(std::slice::from_ref(&site.domain.0)))
                .collect(),
        })
    }

    fn covers(&self, cert: &str) -> bool {
        self.certificates.iter().any(|c| c == cert)
    }
}

/// Which settings renew one certificate of the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Renewer {
    /// The run's own: its project's `[acme]`, or on the host, `renew.toml`.
    Own,
    /// The settings app `.0` keeps on the host.
    App(String),
    /// Claimed by app `.0`, whose settings this run does not hold.
    LeftTo(String),
    /// No app claims it, and the run brings no settings.
    Nobody,
}

/// The settings a `renew-certs` run brings with it.
#[derive(Debug, Clone, Copy)]
pub struct Runner<'a> {
    /// It has some: its project's `[acme]`, or the host's `renew.toml`.
    pub settings: bool,
    /// The app they are for (a project with `[app]`), as its project stands now.
    pub claim: Option<&'a Claim>,
    /// Other apps' certificates are renewed with their settings on the host
    /// (the timer, on the host itself), not left to them (an operator, whose
    /// project holds only its own).
    pub others: bool,
}

/// Who renews `cert`: the run's own app, else the app the host's settings
/// say claims it (the first by name, should two), else the run's own
/// settings. The run's own app is as its project says now, not as the host
/// remembers it: a site it dropped is no longer its.
pub fn renewer(cert: &str, run: Runner<'_>, claims: &[Claim]) -> Renewer {
    if run.claim.is_some_and(|c| c.covers(cert)) {
        return Renewer::Own;
    }
    let other = claims
        .iter()
        .filter(|c| run.claim.is_none_or(|o| o.app != c.app))
        .find(|c| c.covers(cert));
    match other {
        Some(c) if run.others => Renewer::App(c.app.clone()),
        Some(c) => Renewer::LeftTo(c.app.clone()),
        None if run.settings => Renewer::Own,
        None => Renewer::Nobody,
    }
}

/// One file to keep on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum HostSettingsError {
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// A project file that cannot be read, or the host failing: status 1.
impl crate::exit::ExitStatus for HostSettingsError {
    fn exit_code(&self) -> u8 {
        crate::exit::FAILED
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostDoc<A> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renews: Option<Claim>,
    acme: A,
}

/// The files for `config`'s `[acme]` (paths relative to `project`, as in
/// vpsup.toml): its app's, or without `[app]`, the host-wide ones. None
/// without `[acme]`.
pub fn files(config: &Config, project: &Path) -> Result<Vec<HostFile>, HostSettingsError> {
    let Some(acme) = &config.acme else {
        return Ok(Vec::new());
    };
    let read = |relative: &Path| {
        let path = project.join(relative);
        std::fs::read(&path).map_err(|cause| HostSettingsError::Read { path, cause })
    };
    let store = acme.store.as_str();
    let claim = Claim::of(config);
    let (beside, settings_path) = match &claim {
        Some(c) => (
            format!("{}/{}.", apps_dir(store), c.app),
            format!("{}/{}.toml", apps_dir(store), c.app),
        ),
        None => (format!("{store}/"), config_path(store)),
    };
    let mut on_host = acme.clone();
    let mut files = Vec::new();
    if let Some(root) = &acme.extra_root {
        let path = format!("{beside}{EXTRA_ROOT_FILE}");
        on_host.extra_root = Some(PathBuf::from(&path));
        files.push(HostFile {
            path,
            content: read(root)?,
            mode: 0o644,
        });
    }
    if let (Some(dns), Some(host_dns)) = (&acme.dns, on_host.dns.as_mut()) {
        let path = format!("{beside}{DNS_SECRET_FILE}");
        host_dns.secret_file = PathBuf::from(&path);
        files.push(HostFile {
            path,
            content: read(&dns.secret_file)?,
            mode: 0o600,
        });
    }
    let header = match &claim {
        Some(c) => format!(
            "app {}'s [acme] settings, as its project's last `vpsup deploy` or\n\
             # `vpsup renew-certs` left them. `vpsup renew-certs --local` (the\n\
             # vpsup-renew-certs timer) renews the certificates under [renews] with them.",
            c.app
        ),
        None => "the [acme] settings of the last project without [app] whose\n\
             # `vpsup renew-certs` ran here. `vpsup renew-certs --local` (the\n\
             # vpsup-renew-certs timer) renews every certificate no app claims\n\
             # (renew.d/) with them."
            .to_string(),
    };
    let body = toml::to_string(&HostDoc {
        renews: claim.clone(),
        acme: &on_host,
    })
    .unwrap_or_default();
    let doc = format!(
        "# Managed by vpsup: {header}\n# Edits here are overwritten on the next run.\n\n{body}"
    );
    // Written last: it names the others, which must be in place first.
    files.push(HostFile {
        path: settings_path,
        content: doc.into_bytes(),
        mode: 0o600,
    });
    Ok(files)
}

/// One app's settings as the host keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSettings {
    pub path: String,
    pub claim: Claim,
    /// Kept apart from the claim: settings this binary cannot read still
    /// say which certificates they are for (and fail only those).
    pub acme: Result<AcmeConfig, String>,
}

/// A script (run as root) that prints every app's settings in the store at
/// `store` for `parse_apps` (not their secrets, which stay in their own
/// files); `renew-certs` folds it into its listing of the store.
pub fn apps_script(store: &str) -> String {
    format!(
        "for f in {}/*.toml; do\n  [ -f \"$f\" ] && printf 'settings %s %s\\n' \"$f\" \"$(base64 -w0 \"$f\")\"\ndone\nexit 0",
        quote(&apps_dir(store))
    )
}

/// The settings `apps_script` printed. An unreadable one is an error naming
/// its file; the others stand.
pub fn parse_apps(text: &str) -> Vec<Result<AppSettings, String>> {
    use base64::Engine;
    text.lines()
        .filter_map(|line| line.strip_prefix("settings "))
        .map(|line| {
            let (path, encoded) = line.rsplit_once(' ').unwrap_or((line, ""));
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| format!("{path}: unreadable ({e})"))?;
            parse_app(path, &String::from_utf8_lossy(&bytes))
        })
        .collect()
}

/// One app's settings file (`path` names it in errors).
pub fn parse_app(path: &str, text: &str) -> Result<AppSettings, String> {
    #[derive(Deserialize)]
    struct Claimed {
        renews: Claim,
    }
    let bad = |e: toml::de::Error| format!("{path}: {}", e.message().trim_end());
    let claim = toml::from_str::<Claimed>(text).map_err(bad)?.renews;
    let acme = toml::from_str::<HostDoc<AcmeConfig>>(text)
        .map(|doc| doc.acme)
        .map_err(bad);
    Ok(AppSettings {
        path: path.to_string(),
        claim,
        acme,
    })
}

/// Brings the host's files up to date: one exec compares hashes, one more
/// writes those that differ (their content travels on stdin, never in
/// arguments) into `store` (or its `renew.d`). Returns the paths written.
pub async fn sync<'f>(
    transport: &dyn Transport,
    store: &str,
    files: &'f [HostFile],
) -> Result<Vec<&'f str>, TransportError> {
    sync_files(transport, store, files, "the renewal settings").await
}

/// As `sync`, for any settings kept under `dir` (0700 root); `what` names
/// them in errors ("the backup settings").
pub async fn sync_files<'f>(
    transport: &dyn Transport,
    store: &str,
    files: &'f [HostFile],
    what: &str,
) -> Result<Vec<&'f str>, TransportError> {
    let mut hashes = String::new();
    for file in files {
        let path = quote(&file.path);
        hashes.push_str(&format!(
            "if [ -f {path} ]; then sha256sum < {path} | cut -d' ' -f1; else echo -; fi\n"
        ));
    }
    let out = transport
        .run_ok(
            &format!("comparing {what} on the host"),
            ExecRequest::new(hashes).become_root(true),
        )
        .await?;
    let seen = String::from_utf8_lossy(&out.stdout);
    let mut seen = seen.lines();
    let stale: Vec<&HostFile> = files
        .iter()
        .filter(|f| seen.next().map(str::trim) != Some(sha256_hex(&f.content).as_str()))
        .collect();
    if stale.is_empty() {
        return Ok(Vec::new());
    }
    let mut write = format!(
        "set -e\numask 077\nmkdir -p {store}\nchmod 0700 {store}\n",
        store = quote(store)
    );
    // The apps' directory (renew.d), 0700 under the umask.
    let dirs: std::collections::BTreeSet<&str> = stale
        .iter()
        .filter_map(|f| f.path.rsplit_once('/').map(|(dir, _)| dir))
        .filter(|dir| *dir != store.trim_end_matches('/'))
        .collect();
    for dir in dirs {
        write.push_str(&format!("mkdir -p {}\n", quote(dir)));
    }
    for file in &stale {
        write.push_str(&script::write_file(
            &file.path,
            &file.content,
            &FileMeta::mode(file.mode).owner("root"),
        ));
    }
    transport
        .run_ok(
            &format!("writing {what} on the host"),
            ExecRequest::piped(write).become_root(true),
        )
        .await?;
    Ok(stale.iter().map(|f| f.path.as_str()).collect())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::LocalTransport;

    fn config(text: &str) -> Config {
        Config::parse(
            &format!("[acme]\nemail = \"ops@example.com\"\n{text}"),
            Path::new("vpsup.toml"),
        )
        .unwrap()
    }

    const DNS: &str =
        "[acme.dns]\nprovider = \"rfc2136\"\nserver = \"127.0.0.1:5353\"\nzone = \"example.com\"\n\
                       key_name = \"vpsup\"\nsecret_file = \"tsig.key\"\n";

    /// A project directory holding the files [acme] names.
    fn project() -> tempfile::TempDir {
        let project = tempfile::tempdir().unwrap();
        std::fs::write(project.path().join("root.pem"), "ROOT").unwrap();
        std::fs::write(project.path().join("tsig.key"), "c2VjcmV0\n").unwrap();
        project
    }

    /// Where each file goes, and its mode.
    fn placed(files: &[HostFile]) -> Vec<(&str, u32)> {
        files.iter().map(|f| (f.path.as_str(), f.mode)).collect()
    }

    #[test]
    fn the_host_copy_points_at_files_beside_it_and_parses_back() {
        let project = project();
        let config = config(&format!(
            "directory = \"https://127.0.0.1:14000/dir\"\nextra_root = \"root.pem\"\n{DNS}"
        ));
        let files = files(&config, project.path()).unwrap();
        assert_eq!(
            placed(&files),
            [
                ("/etc/vpsup/acme/extra-root.pem", 0o644),
                ("/etc/vpsup/acme/dns.secret", 0o600),
                ("/etc/vpsup/acme/renew.toml", 0o600)
            ]
        );
        assert_eq!(files[0].content, b"ROOT");
        assert_eq!(files[1].content, b"c2VjcmV0\n");
        let doc = String::from_utf8(files[2].content.clone()).unwrap();
        assert!(
            !doc.contains("c2VjcmV0"),
            "the secret stays in its own file"
        );
        let back = Config::parse(&doc, Path::new("renew.toml"))
            .unwrap()
            .acme
            .unwrap();
        assert_eq!(
            back.extra_root.as_deref(),
            Some(Path::new("/etc/vpsup/acme/extra-root.pem"))
        );
        assert_eq!(
            back.dns.unwrap().secret_file,
            PathBuf::from("/etc/vpsup/acme/dns.secret")
        );
        let acme = config.acme.unwrap();
        assert_eq!(back.directory, acme.directory);
        assert_eq!(back.email, acme.email);
    }

    /// An app's settings go to renew.d/, named after it, with its own copies
    /// of the files they point at, and list the certificates of its sites.
    #[test]
    fn an_apps_settings_live_in_renew_d_and_claim_its_sites_certificates() {
        let project = project();
        let config = config(&format!(
            "extra_root = \"root.pem\"\n{DNS}\n[app]\nname = \"shop\"\n\n\
             [[sites]]\ndomain = \"*.shop.example.com\"\nservice = \"web\"\nport = 80\n\n\
             [[sites]]\ndomain = \"shop.example.com\"\nservice = \"web\"\nport = 80\n"
        ));
        let files = files(&config, project.path()).unwrap();
        assert_eq!(
            placed(&files),
            [
                ("/etc/vpsup/acme/renew.d/shop.extra-root.pem", 0o644),
                ("/etc/vpsup/acme/renew.d/shop.dns.secret", 0o600),
                ("/etc/vpsup/acme/renew.d/shop.toml", 0o600)
            ]
        );
        let doc = String::from_utf8(files[2].content.clone()).unwrap();
        assert!(!doc.contains("c2VjcmV0"), "{doc}");
        let back = parse_app(&files[2].path, &doc).unwrap();
        assert_eq!(
            back.claim,
            Claim {
                app: "shop".into(),
                certificates: vec![
                    "wildcard.shop.example.com".into(),
                    "shop.example.com".into()
                ],
            }
        );
        let acme = back.acme.unwrap();
        assert_eq!(
            acme.dns.unwrap().secret_file,
            PathBuf::from("/etc/vpsup/acme/renew.d/shop.dns.secret")
        );
        assert_eq!(
            acme.extra_root.as_deref(),
            Some(Path::new("/etc/vpsup/acme/renew.d/shop.extra-root.pem"))
        );
        // It is no project config: `--config` must not take it for renew.toml.
        assert!(Config::parse(&doc, Path::new("shop.toml")).is_err());
    }

    #[test]
    fn a_missing_extra_root_names_the_file() {
        let project = tempfile::tempdir().unwrap();
        let err = files(&config("extra_root = \"nope.pem\"\n"), project.path()).unwrap_err();
        assert!(err.to_string().contains("nope.pem"), "{err}");
    }

    /// Settings this binary cannot read still say which certificates they
    /// renew, so that only those fail; a file without a claim names itself.
    #[test]
    fn unreadable_settings_keep_their_claim_or_name_their_file() {
        let path = "/etc/vpsup/acme/renew.d/shop.toml";
        let read = parse_app(
            path,
            "[renews]\napp = \"shop\"\ncertificates = [\"shop.example.com\"]\n\n[acme]\nemail = \"ops@example.com\"\nnew_key = 1\n",
        )
        .unwrap();
        assert_eq!(read.claim.certificates, ["shop.example.com"]);
        let err = read.acme.unwrap_err();
        assert!(err.starts_with(path) && err.contains("new_key"), "{err}");
        let err = parse_app(path, "[acme]\nemail = \"ops@example.com\"\n").unwrap_err();
        assert!(err.starts_with(path) && err.contains("renews"), "{err}");
    }

    fn claim(app: &str, certificates: &[&str]) -> Claim {
        Claim {
            app: app.into(),
            certificates: certificates.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// Which settings renew which certificate, on a host holding portfolio's
    /// (HTTP-01) and shop's (a DNS-01 wildcard), plus one nobody claims.
    #[test]
    fn each_certificate_is_renewed_with_its_apps_settings() {
        use Renewer::*;
        let portfolio = claim("portfolio", &["portfolio.example.com"]);
        let shop = claim("shop", &["wildcard.shop.example.com"]);
        let on_host = [portfolio.clone(), shop.clone()];
        let certs = [
            "portfolio.example.com",
            "wildcard.shop.example.com",
            "old.example.com",
        ];
        let app = |a: &str| App(a.to_string());
        let left = |a: &str| LeftTo(a.to_string());
        let own = |settings, claim, others| Runner {
            settings,
            claim,
            others,
        };
        // A project whose site moved to it takes its certificate over.
        let moved = claim(
            "portfolio",
            &["portfolio.example.com", "wildcard.shop.example.com"],
        );
        // A project that dropped its site no longer claims its certificate.
        let dropped = claim("portfolio", &[]);
        for (who, run, expected) in [
            (
                "the timer with renew.toml",
                own(true, None, true),
                [app("portfolio"), app("shop"), Own],
            ),
            (
                "the timer, apps only",
                own(false, None, true),
                [app("portfolio"), app("shop"), Nobody],
            ),
            (
                "portfolio's operator",
                own(true, Some(&portfolio), false),
                [Own, left("shop"), Own],
            ),
            (
                "shop's operator",
                own(true, Some(&shop), false),
                [left("portfolio"), Own, Own],
            ),
            (
                "an operator without [app]",
                own(true, None, false),
                [left("portfolio"), left("shop"), Own],
            ),
            (
                "portfolio's operator, site moved",
                own(true, Some(&moved), false),
                [Own, Own, Own],
            ),
            (
                "portfolio's operator, site dropped",
                own(true, Some(&dropped), false),
                [Own, left("shop"), Own],
            ),
        ] {
            let got: Vec<_> = certs.iter().map(|c| renewer(c, run, &on_host)).collect();
            assert_eq!(got, expected, "{who}");
        }
        // Two apps claiming one certificate: the first by name renews it.
        let twice = [
            claim("a", &["x.example.com"]),
            claim("b", &["x.example.com"]),
        ];
        assert_eq!(
            renewer("x.example.com", own(false, None, true), &twice),
            app("a")
        );
    }

    /// Two projects write into one store: each keeps its own files (modes
    /// kept, renew.d private), and both are read back.
    #[tokio::test]
    async fn two_apps_settings_are_kept_side_by_side_in_one_store() {
        let host = tempfile::tempdir().unwrap();
        let store = host.path().join("acme").display().to_string();
        let transport = LocalTransport::current();
        let project = project();
        for (app, extra) in [("portfolio", ""), ("shop", DNS)] {
            let config = config(&format!(
                "store = \"{store}\"\nextra_root = \"root.pem\"\n{extra}\n[app]\nname = \"{app}\"\n\n\
                 [[sites]]\ndomain = \"{app}.example.com\"\nservice = \"web\"\nport = 80\n"
            ));
            let files = files(&config, project.path()).unwrap();
            let written = sync(&transport, &store, &files).await.unwrap();
            assert_eq!(written.len(), files.len());
            assert!(sync(&transport, &store, &files).await.unwrap().is_empty());
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let apps = apps_dir(&store);
        assert_eq!(mode(&apps), 0o700);
        assert_eq!(mode(&format!("{apps}/shop.toml")), 0o600);
        assert_eq!(mode(&format!("{apps}/shop.dns.secret")), 0o600);
        assert_eq!(mode(&format!("{apps}/portfolio.extra-root.pem")), 0o644);
        assert!(!Path::new(&config_path(&store)).exists());
        assert_eq!(
            store_with_only_apps(Path::new(&config_path(&store))),
            Some(store.clone())
        );
        let listed = transport
            .run_ok("listing", ExecRequest::new(apps_script(&store)))
            .await
            .unwrap();
        let read: Vec<_> = parse_apps(&listed.stdout_str())
            .into_iter()
            .map(|a| a.unwrap().claim)
            .collect();
        assert_eq!(
            read,
            [
                claim("portfolio", &["portfolio.example.com"]),
                claim("shop", &["shop.example.com"])
            ]
        );
    }
}
