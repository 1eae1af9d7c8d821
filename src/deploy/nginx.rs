//! The app's nginx files, rendered into the release (`.vpsup/nginx/`) from
//! `templates/nginx_site.conf.tera` and `nginx_websocket_map.conf.tera`;
//! activation copies them into nginx's sites directory
//! (`AppPaths::activate_script`).

use std::collections::BTreeMap;

use serde_json::json;

use super::ports;
use super::remote;
use super::switch::Slot;
use super::upload::ReleaseFile;
use crate::acme::store::cert_name;
use crate::config::SiteConfig;
use crate::engine::render::{Renderer, Vars};

/// What the app's nginx files are rendered from.
pub struct NginxSites<'a> {
    pub app: &'a str,
    pub sites: &'a [SiteConfig],
    pub ports: &'a BTreeMap<ports::Target, u16>,
    pub store_dir: &'a str,
    /// The ACME webroot kept on :80 for renewals.
    pub webroot: &'a str,
    /// nginx 1.25.1 and later: `http2 on;` instead of `listen ... http2`.
    pub http2_on: bool,
    /// The slot these files serve (their site files go to its directory).
    pub slot: Option<Slot>,
}

impl NginxSites<'_> {
    /// The WebSocket map and one server file per site, as release files.
    pub fn render(&self, renderer: &Renderer) -> Result<Vec<ReleaseFile>, String> {
        let mut vars = Vars::default();
        vars.base.insert("app".into(), json!(self.app));
        vars.base
            .insert("nginx_http2_on".into(), json!(self.http2_on));
        vars.base.insert("acme_webroot".into(), json!(self.webroot));
        let render = |template: &str, vars: &Vars| {
            renderer
                .template(template, vars)
                .map(String::into_bytes)
                .map_err(|e| e.to_string())
        };
        let mut files = vec![ReleaseFile {
            path: remote::MAP_FILE.to_string(),
            content: render("nginx_websocket_map.conf.tera", &vars)?,
            mode: 0o644,
        }];
        let port = |service: &str, port: u16| {
            self.ports
                .get(&(service.to_string(), port))
                .copied()
                .unwrap_or_default()
        };
        for site in self.sites {
            let mut routes: Vec<serde_json::Value> = site
                .routes
                .iter()
                .map(|r| json!({"path": r.path.0, "port": port(&r.service.0, r.port.0), "websockets": r.websockets}))
                .collect();
            routes.push(json!({"path": "/", "port": port(&site.service.0, site.port.0), "websockets": site.websockets}));
            let mut vars = vars.clone();
            vars.base.insert(
                "site".into(),
                json!({
                    "domain": site.domain.0,
                    "cert_dir": format!("{}/certs/{}", self.store_dir.trim_end_matches('/'), cert_name(std::slice::from_ref(&site.domain.0))),
                    "max_body": site.max_body.0,
                    "routes": routes,
                }),
            );
            files.push(ReleaseFile {
                path: site_file_in(self.slot, &site.domain.0),
                content: render("nginx_site.conf.tera", &vars)?,
                mode: 0o644,
            });
        }
        Ok(files)
    }
}

/// A site's file inside the release.
pub fn site_file(domain: &str) -> String {
    site_file_in(None, domain)
}

/// A site's file inside the release, for `slot`.
pub fn site_file_in(slot: Option<Slot>, domain: &str) -> String {
    format!("{}/{domain}.conf", remote::nginx_dir(slot))
}

/// Whether the host's nginx (`nginx -v`'s version) takes `http2 on;`.
pub fn http2_on(nginx_version: Option<&str>) -> bool {
    nginx_version.is_some_and(|v| crate::facts::version_at_least(v, &[1, 25, 1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::assets::Assets;

    /// Every variable the site template reads is given (a missing one fails
    /// the deploy on the host, as the VM test once found), and the file says
    /// what nginx needs.
    #[test]
    fn the_site_files_render_with_the_real_templates() {
        let config: Config = toml::from_str(
            "[[sites]]\ndomain = \"doctor.example.com\"\nservice = \"frontend\"\nport = 80\nwebsockets = true\nroutes = [{ path = \"/api/\", service = \"backend\", port = 8000 }]\n",
        )
        .unwrap();
        let ports = BTreeMap::from([
            (("frontend".to_string(), 80), 21000),
            (("backend".to_string(), 8000), 22000),
        ]);
        let assets = Assets::load(None).unwrap();
        let renderer = Renderer::new(&assets.templates).unwrap();
        for http2_on in [false, true] {
            let files = NginxSites {
                app: "doctor",
                sites: &config.sites,
                ports: &ports,
                store_dir: "/etc/vpsup/acme",
                webroot: "/var/lib/vpsup/acme",
                http2_on,
                slot: None,
            }
            .render(&renderer)
            .unwrap();
            let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
            assert_eq!(
                paths,
                [remote::MAP_FILE, ".vpsup/nginx/doctor.example.com.conf"]
            );
            let site = String::from_utf8(files[1].content.clone()).unwrap();
            for expected in [
                "server_name doctor.example.com;",
                "root /var/lib/vpsup/acme;",
                "return 301 https://$host$request_uri;",
                "ssl_certificate /etc/vpsup/acme/certs/doctor.example.com/fullchain.pem;",
                "location /api/ {\n        proxy_pass http://127.0.0.1:22000;",
                "location / {\n        proxy_pass http://127.0.0.1:21000;",
                "Connection $vpsup_connection_upgrade;",
            ] {
                assert!(site.contains(expected), "{expected:?} in:\n{site}");
            }
            assert_eq!(site.contains("http2 on;"), http2_on);
        }
    }

    #[test]
    fn http2_on_from_nginx_1_25_1() {
        assert!(!http2_on(None));
        assert!(!http2_on(Some("1.22.1")));
        assert!(!http2_on(Some("1.25.0")));
        assert!(http2_on(Some("1.25.1")));
        assert!(http2_on(Some("1.26")));
        assert!(http2_on(Some("2.0.0")));
    }
}
