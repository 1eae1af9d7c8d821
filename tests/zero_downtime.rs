//! Zero-downtime deploys (issue 15), the switch against a real nginx: a
//! client loop sends requests through nginx to the "old" instance while
//! `activate_script` switches the site to the "new" one (nginx -t, graceful
//! reload), `drain_script` waits for the old instance's last request (a slow
//! one, in flight at the switch), and only then the old instance stops.
//! Not one request may fail. The instances are plain HTTP servers here (no
//! Docker on this machine); the containers' part is the VM's.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::*;
use vpsup::deploy::remote::{parse_switched, AppPaths};
use vpsup::deploy::switch::{drain_script, parse_drain, Draining};

/// An app instance: answers every request with its name (`/slow` after
/// 1.5 s), one thread per connection, until stopped.
struct Instance {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Instance {
    fn start(name: &'static str) -> Instance {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = if request.starts_with(b"GET /slow") {
                        std::thread::sleep(Duration::from_millis(1500));
                        format!("{name}-slow")
                    } else {
                        name.to_string()
                    };
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Instance {
            port,
            stop,
            accept: Some(accept),
        }
    }

    /// Stops listening: later connections are refused.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            accept.join().unwrap();
        }
    }
}

/// One request through nginx: `Ok(body)` for a 200, else what came back.
fn get(port: u16, path: &str) -> Result<String, String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(response.lines().next().unwrap_or("nothing").to_string()),
    }
}

/// When a visitor's request ended, and how.
type Answer = (Instant, Result<String, String>);

fn site(nginx_port: u16, upstream: u16) -> String {
    format!(
        "server {{\n    listen 127.0.0.1:{nginx_port};\n    server_name shop.test;\n    location / {{\n        proxy_pass http://127.0.0.1:{upstream};\n        proxy_http_version 1.1;\n        proxy_set_header Host $host;\n    }}\n}}\n"
    )
}

#[test]
fn nginx_switches_to_the_new_instance_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut old = Instance::start("old");
    let mut new = Instance::start("new");
    let nginx_port = free_port();

    // nginx as on a host: the app's site file in the sites directory.
    let sites = d.join("sites");
    std::fs::create_dir_all(&sites).unwrap();
    std::fs::write(
        sites.join("vpsup-shop.shop.test.conf"),
        site(nginx_port, old.port),
    )
    .unwrap();
    let conf = d.join("nginx.conf");
    let p = d.display();
    std::fs::write(
        &conf,
        format!(
            "pid {p}/nginx.pid;\nerror_log {p}/error.log;\nworker_processes 2;\nworker_shutdown_timeout 30s;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {p}; proxy_temp_path {p}; fastcgi_temp_path {p}; uwsgi_temp_path {p}; scgi_temp_path {p};\n  include {}/*.conf;\n}}\n",
            sites.display()
        ),
    )
    .unwrap();
    let _nginx = NginxProcess::start(&conf, &[nginx_port]);
    // `nginx` on PATH is this nginx, as the host's is to the activation.
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("nginx");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec /usr/sbin/nginx -c {} \"$@\"\n",
            conf.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    // Release r2: its site file points at the new instance.
    let paths = AppPaths {
        app: "shop".into(),
        dir: d.join("app").display().to_string(),
        sites_dir: sites.display().to_string(),
    };
    let nginx_dir = d.join("app/releases/r2/.vpsup/nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    std::fs::write(nginx_dir.join("shop.test.conf"), site(nginx_port, new.port)).unwrap();
    assert_eq!(get(nginx_port, "/"), Ok("old".to_string()));

    // Visitors: four clients, one request after another, new connections.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let clients: Vec<JoinHandle<()>> = (0..4)
        .map(|_| {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let answer = get(nginx_port, "/");
                    seen.lock().unwrap().push((Instant::now(), answer));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let slow = std::thread::spawn(move || get(nginx_port, "/slow"));
    std::thread::sleep(Duration::from_millis(200));

    // The switch, then the drain, then the old instance stops.
    let script = format!(
        "PATH={}:$PATH\n{}",
        bin.display(),
        paths.activate_script(
            "r2",
            None,
            "nginx -s reload",
            &[],
            "release=r2 at=now by=test"
        )
    );
    let out = run_checked(Command::new("sh").args(["-c", &script]), "the activation");
    let switched_at = Instant::now();
    let switch_ms = parse_switched(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let drain = drain_script(
        &[Draining {
            domain: "shop.test".into(),
            ports: vec![old.port],
        }],
        10,
    );
    let out = run_checked(Command::new("sh").args(["-c", &drain]), "the drain");
    let drained = parse_drain(&String::from_utf8_lossy(&out.stdout));
    old.stop();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let slow = slow.join().unwrap();
    new.stop();

    let seen = seen.lock().unwrap();
    let failed: Vec<&Result<String, String>> = seen
        .iter()
        .filter(|(_, a)| a.is_err())
        .map(|(_, a)| a)
        .collect();
    let after_drain = seen
        .iter()
        .filter(|(at, _)| *at > switched_at + Duration::from_millis(drained[0].ms + 50));
    let old_after: usize = after_drain
        .filter(|(_, a)| a.as_deref() == Ok("old"))
        .count();
    eprintln!(
        "requests: {}, failed: {}, switch: {switch_ms} ms, drain: {:?}",
        seen.len(),
        failed.len(),
        drained
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(seen.iter().any(|(_, a)| a.as_deref() == Ok("old")));
    assert!(seen.iter().any(|(_, a)| a.as_deref() == Ok("new")));
    assert_eq!(old_after, 0, "the old instance answered after its drain");
    // The request in flight at the switch finished on the old instance,
    // and the drain waited for it.
    assert_eq!(slow, Ok("old-slow".to_string()));
    assert_eq!(drained.len(), 1);
    assert_eq!(drained[0].open, 0, "{drained:?}");
    assert!(drained[0].ms >= 500, "{drained:?}");
    assert_eq!(
        get(nginx_port, "/"),
        Err("HTTP/1.1 502 Bad Gateway".to_string())
    );
}
