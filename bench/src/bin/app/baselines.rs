//! The plain HTTP servers the app path is measured against, answering the same bytes as `echo`: tiny_http
//! in this process and nginx (one worker, generated config in a temp dir).

use crate::load::Server;
use crate::{ECHO_BODY, ECHO_PATH, TINY_HTTP_THREADS};
use devcluster::{http, wait_for};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A minimal tiny_http server in this process, on its own handler threads, answering `ECHO_BODY`.
pub struct TinyHttp {
    pub server: Arc<tiny_http::Server>,
    pub stopping: Arc<AtomicBool>,
    pub threads: Vec<JoinHandle<()>>,
}

impl TinyHttp {
    pub fn start() -> TinyHttp {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("tiny_http baseline: bind 127.0.0.1:0"));
        let stopping = Arc::new(AtomicBool::new(false));
        let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
            .expect("a constant header is valid");
        let threads = (0..TINY_HTTP_THREADS)
            .map(|_| {
                let (server, stopping, header) = (server.clone(), stopping.clone(), header.clone());
                std::thread::spawn(move || {
                    while let Ok(request) = server.recv() {
                        if stopping.load(Ordering::Relaxed) {
                            break;
                        }
                        let response = tiny_http::Response::from_data(ECHO_BODY.as_bytes()).with_header(header.clone());
                        let _ = request.respond(response);
                    }
                })
            })
            .collect();
        TinyHttp { server, stopping, threads }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.server_addr().to_ip().expect("tiny_http baseline listens on TCP")
    }

    pub fn stop(self) {
        self.stopping.store(true, Ordering::Relaxed);
        for _ in &self.threads {
            self.server.unblock();
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// An nginx master with one worker, from a generated config in a temp dir; stopped (SIGTERM) on drop.
pub struct Nginx {
    pub child: Child,
    pub dir: PathBuf,
    pub addr: SocketAddr,
}

impl Nginx {
    pub fn start(bin: &Path) -> Result<Nginx, String> {
        let dir = std::env::temp_dir().join(format!("aether-bench-nginx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let port = devcluster::free_ports(1).first().copied().ok_or("no free port on 127.0.0.1")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_config(&dir, addr)).map_err(|e| format!("{}: {e}", conf.display()))?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut nginx = Nginx { child, dir, addr };
        let up = wait_for(Duration::from_secs(10), || {
            matches!(nginx.child.try_wait(), Ok(Some(_)))
                || http(addr, "GET", ECHO_PATH, b"").is_ok_and(|r| r.text() == ECHO_BODY)
        });
        if up.is_err() || !matches!(nginx.child.try_wait(), Ok(None)) {
            let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
            return Err(format!("nginx did not come up: {}", log.trim()));
        }
        Ok(nginx)
    }
}

impl Nginx {
    /// The master and its worker, for CPU accounting.
    pub fn servers(&self) -> Vec<Server> {
        let master = self.child.id();
        let workers = bench::child_pids(master).into_iter().map(|pid| Server { name: "nginx worker".into(), pid });
        std::iter::once(Server { name: "nginx master".into(), pid: master }).chain(workers).collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its worker; SIGKILL would leave the worker behind.
        devcluster::terminate_pid(self.child.id(), Duration::from_secs(5));
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn nginx_config(dir: &Path, addr: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         keepalive_requests 100000000;\n  keepalive_timeout 300s;\n  \
         server {{\n    listen {addr};\n    location / {{\n      default_type application/json;\n      \
         return 200 '{ECHO_BODY}';\n    }}\n  }}\n}}\n"
    )
}
