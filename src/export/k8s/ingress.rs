//! One Ingress per site: its path routes, TLS through cert-manager, and the
//! nginx settings vpsup uses on the host (`client_max_body_size`, WebSocket
//! upgrades and their 1 h read timeout) as ingress-nginx annotations.

use serde_json::{json, Value};

use crate::config::SiteConfig;

/// The object's name for a domain (`*.example.com`: `wildcard-example-com`).
pub fn name(domain: &str) -> String {
    domain.replace("*.", "wildcard.").replace('.', "-")
}

pub fn ingress(site: &SiteConfig, issuer: &str, labels: &Value) -> Value {
    let domain = &site.domain.0;
    let name = name(domain);
    let mut annotations = serde_json::Map::new();
    annotations.insert("cert-manager.io/cluster-issuer".into(), json!(issuer));
    annotations.insert(
        "nginx.ingress.kubernetes.io/proxy-body-size".into(),
        json!(site.max_body.0),
    );
    if site.websockets || site.routes.iter().any(|r| r.websockets) {
        // ingress-nginx forwards upgrades by itself; vpsup's nginx keeps a
        // WebSocket open for an hour without traffic: so does this.
        for key in ["proxy-read-timeout", "proxy-send-timeout"] {
            annotations.insert(format!("nginx.ingress.kubernetes.io/{key}"), json!("3600"));
        }
    }
    let path = |path: &str, service: &str, port: u16| {
        json!({
            "path": path,
            "pathType": "Prefix",
            "backend": { "service": { "name": service, "port": { "number": port } } },
        })
    };
    let mut paths: Vec<Value> = site
        .routes
        .iter()
        .map(|r| path(&r.path.0, r.service.as_str(), r.port.0))
        .collect();
    paths.push(path("/", site.service.as_str(), site.port.0));
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": { "name": name, "labels": labels, "annotations": annotations },
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{ "hosts": [domain], "secretName": format!("{name}-tls") }],
            "rules": [{ "host": domain, "http": { "paths": paths } }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(toml: &str) -> SiteConfig {
        let text = format!("[app]\nname = \"doctor\"\n[[sites]]\n{toml}");
        crate::config::Config::parse(&text, std::path::Path::new("vpsup.toml"))
            .unwrap()
            .sites
            .remove(0)
    }

    #[test]
    fn tls_through_cert_manager_and_nginx_settings_as_annotations() {
        let s = site("domain = \"doctor.example.com\"\nservice = \"frontend\"\nport = 80\nmax_body = \"25m\"\nroutes = [{ path = \"/api/\", service = \"backend\", port = 8000, websockets = true }]\n");
        let ing = ingress(&s, "letsencrypt", &json!({}));
        let a = &ing["metadata"]["annotations"];
        assert_eq!(a["cert-manager.io/cluster-issuer"], "letsencrypt");
        assert_eq!(a["nginx.ingress.kubernetes.io/proxy-body-size"], "25m");
        assert_eq!(a["nginx.ingress.kubernetes.io/proxy-read-timeout"], "3600");
        assert_eq!(ing["spec"]["tls"][0]["hosts"][0], "doctor.example.com");
        assert_eq!(
            ing["spec"]["tls"][0]["secretName"],
            "doctor-example-com-tls"
        );
        let paths = &ing["spec"]["rules"][0]["http"]["paths"];
        // The route first, then everything else to the site's service.
        assert_eq!(paths[0]["path"], "/api/");
        assert_eq!(paths[0]["backend"]["service"]["name"], "backend");
        assert_eq!(paths[1]["path"], "/");
        assert_eq!(paths[1]["backend"]["service"]["port"]["number"], 80);
    }

    #[test]
    fn no_websocket_timeouts_unless_asked_and_wildcards_get_a_valid_name() {
        let s = site("domain = \"*.example.com\"\nservice = \"web\"\nport = 8080\n");
        let ing = ingress(&s, "le", &json!({}));
        assert!(ing["metadata"]["annotations"]
            .get("nginx.ingress.kubernetes.io/proxy-read-timeout")
            .is_none());
        assert_eq!(
            ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"],
            "10m"
        );
        assert_eq!(ing["metadata"]["name"], "wildcard-example-com");
    }
}
