//! Origins in front of a [`crate::servers::SmartHttp`]: one real nginx
//! whose listeners on 127.0.0.1 are each an origin of its own (a port of
//! its own), for the tests of where a source's credentials go.
//!
//! Each [`Origin`] either serves the git server behind it (`proxy_pass`),
//! asking for HTTP basic credentials when it has a user file, or redirects
//! every request to another origin. Every request is logged with the port
//! it came in on and the `Authorization` header it carried, so a test can
//! tell which origin saw the token. Stops on drop (the process group of
//! `servers.rs`).
//!
//! Include it after `servers.rs`: `#[path = "support/front.rs"] mod front;`.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use crate::servers::{ProcessGroup, READY_TIMEOUT, closed_port, find_program, localhost};

/// What one origin does with every request.
#[derive(Clone, Debug)]
pub enum Role {
    /// Serves the git server at this address, asking for basic auth with
    /// these credentials (user, password) when given.
    Serve {
        /// The git server (plain HTTP).
        upstream: SocketAddr,
        /// The only credentials accepted, if any are asked for.
        basic: Option<(String, String)>,
    },
    /// Answers with this status and `Location:` the origin at index
    /// `to` (of the list given to [`Front::start`]), same path and query.
    Redirect {
        /// 301, 302, 303, 307 or 308.
        status: u16,
        /// The origin redirected to.
        to: usize,
    },
    /// Answers with this status and `Location:` this path on the same
    /// origin when the path starts with `from`; serves as `Serve` otherwise.
    Moved {
        /// The prefix that moved.
        from: String,
        /// Where it went.
        to: String,
        /// What the rest of the origin does.
        upstream: SocketAddr,
        /// As in `Serve`.
        basic: Option<(String, String)>,
    },
}

/// One request as nginx logged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// The port it came in on: which origin.
    pub port: u16,
    /// The status answered.
    pub status: u16,
    /// Method and URI.
    pub request: String,
    /// The `Authorization` header, empty when there was none.
    pub authorization: String,
}

/// The nginx and its origins.
pub struct Front {
    /// The ports, in the order of the roles given.
    ports: Vec<u16>,
    /// The access log.
    log: PathBuf,
    /// nginx.
    group: ProcessGroup,
    /// Config, logs, user files; the last field, removed last.
    dir: tempfile::TempDir,
}

impl Front {
    /// Starts nginx with one origin a role. Ports are picked free and then
    /// given to nginx, so another test may take one in between: a failed
    /// start is tried again, at most three times.
    pub fn start(roles: &[Role]) -> Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(roles) {
                Ok(front) => return Ok(front),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("three attempts"))
    }

    fn start_once(roles: &[Role]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("driftless-front-")
            .tempdir()
            .context("creating the front's directory")?;
        let root = dir.path();
        fs::create_dir(root.join("temp")).context("temp directory")?;
        let ports = (0..roles.len())
            .map(|_| closed_port())
            .collect::<Result<Vec<_>>>()?;
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        ensure!(distinct.len() == ports.len(), "two origins got one port");
        let log = root.join("access.log");
        let conf = root.join("nginx.conf");
        fs::write(&conf, render(root, &ports, roles, &log)?).context("writing nginx.conf")?;
        let mut group = ProcessGroup::new()?;
        let mut cmd = Command::new(find_program("nginx", "nginx")?);
        cmd.arg("-p")
            .arg(root)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(root.join("error.log"))
            .arg("-g")
            .arg("daemon off;")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let index = group.spawn(&mut cmd, "nginx (Debian package `nginx`)")?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while !ports.iter().all(|port| ready(localhost(*port))) {
            if let Some(status) = group.members[index].try_wait()? {
                let log = fs::read_to_string(root.join("error.log")).unwrap_or_default();
                bail!("nginx exited ({status}) at start:\n{log}");
            }
            ensure!(
                Instant::now() < deadline,
                "nginx did not listen within {READY_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            ports,
            log,
            group,
            dir,
        })
    }

    /// `http://127.0.0.1:PORT/PATH` of origin `index`.
    pub fn url(&self, index: usize, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.ports[index],
            path.trim_start_matches('/')
        )
    }

    /// The port of origin `index`.
    pub fn port(&self, index: usize) -> u16 {
        self.ports[index]
    }

    /// Every request logged so far (nginx logs a request when it ends).
    pub fn log(&self) -> Vec<Logged> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut f = line.split('\t');
                let port = f.next()?.parse().ok()?;
                let status = f.next()?.parse().ok()?;
                let request = f.next()?.to_owned();
                let authorization = f.next().unwrap_or_default();
                let authorization = if authorization == "-" {
                    String::new()
                } else {
                    authorization.to_owned()
                };
                Some(Logged {
                    port,
                    status,
                    request,
                    authorization,
                })
            })
            .collect()
    }

    /// The requests origin `index` got.
    pub fn log_of(&self, index: usize) -> Vec<Logged> {
        let port = self.ports[index];
        self.log().into_iter().filter(|l| l.port == port).collect()
    }
}

/// Whether `GET /__front_ready` on `addr` gets nginx's answer.
fn ready(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(b"GET /__front_ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut response = Vec::new();
        stream.take(4096).read_to_end(&mut response)?;
        Ok(String::from_utf8_lossy(&response).ends_with("front-ready"))
    };
    attempt().unwrap_or(false)
}

/// nginx.conf: one `server` an origin.
fn render(
    root: &std::path::Path,
    ports: &[u16],
    roles: &[Role],
    log: &std::path::Path,
) -> Result<String> {
    let d = |p: &std::path::Path| p.display().to_string();
    let mut servers = String::new();
    for (i, (port, role)) in ports.iter().zip(roles).enumerate() {
        let serve = |upstream: &SocketAddr, basic: &Option<(String, String)>| -> Result<String> {
            let mut text = String::new();
            if let Some((user, password)) = basic {
                ensure!(
                    !format!("{user}{password}").contains([':', '\n', '"']),
                    "credentials nginx's user file cannot hold"
                );
                let users = root.join(format!("users-{i}"));
                fs::write(&users, format!("{user}:{{PLAIN}}{password}\n"))?;
                writeln!(text, "            auth_basic \"releases\";")?;
                writeln!(text, "            auth_basic_user_file \"{}\";", d(&users))?;
            }
            writeln!(text, "            proxy_pass http://{upstream};")?;
            writeln!(text, "            proxy_http_version 1.1;")?;
            writeln!(text, "            proxy_request_buffering off;")?;
            writeln!(text, "            proxy_buffering off;")?;
            Ok(text)
        };
        let body = match role {
            Role::Serve { upstream, basic } => {
                format!(
                    "        location / {{\n{}        }}\n",
                    serve(upstream, basic)?
                )
            }
            Role::Redirect { status, to } => format!(
                "        location / {{\n            return {status} http://127.0.0.1:{}$request_uri;\n        }}\n",
                ports[*to]
            ),
            Role::Moved {
                from,
                to,
                upstream,
                basic,
            } => format!(
                "        location ~ ^{from}(.*)$ {{\n            return 301 {to}$1$is_args$args;\n        }}\n\
                 \x20       location / {{\n{}        }}\n",
                serve(upstream, basic)?
            ),
        };
        write!(
            servers,
            "    server {{\n        listen 127.0.0.1:{port};\n\
             \x20       location = /__front_ready {{\n            access_log off;\n            return 200 \"front-ready\";\n        }}\n{body}    }}\n"
        )?;
    }
    let temp = root.join("temp");
    let user = if fs::metadata(root).map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)? {
        "user root;\n"
    } else {
        ""
    };
    Ok(format!(
        "{user}worker_processes 1;\npid \"{pid}\";\nevents {{\n    worker_connections 64;\n}}\n\
         http {{\n    log_format front '$server_port\\t$status\\t$request_method $request_uri\\t$http_authorization';\n\
         \x20   access_log \"{log}\" front;\n    client_body_temp_path \"{t}/body\";\n\
         \x20   proxy_temp_path \"{t}/proxy\";\n    fastcgi_temp_path \"{t}/fastcgi\";\n\
         \x20   scgi_temp_path \"{t}/scgi\";\n    uwsgi_temp_path \"{t}/uwsgi\";\n\
         \x20   client_max_body_size 0;\n    server_tokens off;\n{servers}}}\n",
        pid = d(&root.join("nginx.pid")),
        log = d(log),
        t = d(&temp),
    ))
}
