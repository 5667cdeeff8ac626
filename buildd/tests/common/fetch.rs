//! What the fetch-sandbox tests share: sandbox settings with the real helper binary, a test CA,
//! a git server over HTTPS (`support/git_https.py`), DNS records in challtestsrv, and a loopback
//! listener that tells whether anything connected to it.

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use buildd::source::FetchSettings;
use buildd::source::egress::{Egress, Resolver};
use tenant::address::{AddressPolicy, Cidr};

/// The real `stackpad-buildd`, whose hidden subcommand runs inside the sandbox.
pub fn helper() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stackpad-buildd"))
}

/// challtestsrv's DNS (answers 127.0.0.1 for every name it has no record for).
pub fn challtestsrv_dns() -> std::net::SocketAddr {
    std::env::var("CHALLTESTSRV_DNS")
        .unwrap_or_else(|_| "127.0.0.1:8053".into())
        .parse()
        .unwrap()
}

fn challtestsrv_api() -> String {
    std::env::var("CHALLTESTSRV_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8055".into())
        .trim_start_matches("http://")
        .to_owned()
}

/// Settings as a daemon would build them: local sources under `local_roots`, `allow` opened in
/// the egress policy, names resolved by challtestsrv.
pub fn settings(local_roots: &[&Path], allow: &[&str]) -> FetchSettings {
    FetchSettings {
        helper: helper(),
        uid: 65532,
        gid: 65532,
        timeout: Duration::from_secs(60),
        max_bytes: 256 << 20,
        max_files: 20_000,
        ca_file: None,
        ssh_known_hosts: None,
        local_roots: local_roots.iter().map(|p| p.to_path_buf()).collect(),
        egress: Egress {
            policy: AddressPolicy {
                deny: vec![],
                allow: allow.iter().map(|c| Cidr::parse(c).unwrap()).collect(),
            },
            resolver: Resolver::nameserver(challtestsrv_dns()),
        },
    }
}

/// [`settings`] shared, as `checkout` takes them.
pub fn shared(settings: FetchSettings) -> Arc<FetchSettings> {
    Arc::new(settings)
}

/// A CA and a server certificate for `name`, made with openssl in a folder of their own.
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        TestCa::for_names(&[name])
    }

    /// One server certificate valid for every name in `names`.
    pub fn for_names(names: &[&str]) -> TestCa {
        let name = names[0];
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .current_dir(d)
                .args(args)
                .output()
                .expect("openssl is needed to make the test CA");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=buildd test CA",
        ]);
        let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        std::fs::write(
            d.join("ext.cnf"),
            format!("subjectAltName={}\n", sans.join(",")),
        )
        .unwrap();
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            &format!("/CN={name}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        TestCa { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// `support/git_https.py`, killed on drop.
pub struct GitServer {
    child: Child,
    pub port: u16,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GitServer {
    /// Serves the repositories under `root` on `address` with `ca`'s server certificate;
    /// `extra` = `--auth USER PASSWORD` and/or `--redirect URL`.
    pub fn start(address: IpAddr, ca: &TestCa, root: &Path, extra: &[&str]) -> GitServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/git_https.py");
        let d = ca.dir.path();
        let mut child = Command::new("python3")
            .arg(script)
            .arg(address.to_string())
            .arg(d.join("server.pem"))
            .arg(d.join("server.key"))
            .arg(root)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed for the git HTTPS test server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("git_https.py did not start: {line:?}"));
        GitServer { child, port }
    }
}

fn challtestsrv(path: &str, body: &str) {
    let addr = challtestsrv_api();
    let mut s = std::net::TcpStream::connect(&addr).unwrap_or_else(|e| {
        panic!("pebble-challtestsrv's API is not on {addr} ({e}): run `scripts/services up`")
    });
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: challtestsrv\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
}

/// An A record in challtestsrv, removed on drop.
pub struct ARecord(String);

impl ARecord {
    pub fn add(name: &str, ip: &str) -> ARecord {
        ARecord::add_all(name, &[ip])
    }

    pub fn add_all(name: &str, ips: &[&str]) -> ARecord {
        let list: Vec<String> = ips.iter().map(|ip| format!("\"{ip}\"")).collect();
        challtestsrv(
            "/add-a",
            &format!(r#"{{"host":"{name}.","addresses":[{}]}}"#, list.join(",")),
        );
        ARecord(name.to_owned())
    }
}

impl Drop for ARecord {
    fn drop(&mut self) {
        challtestsrv("/clear-a", &format!(r#"{{"host":"{}."}}"#, self.0));
    }
}

/// A listener on loopback that accepts nothing; `connections()` counts what reached it.
pub struct Canary {
    listener: TcpListener,
    pub port: u16,
}

impl Canary {
    pub fn new() -> Canary {
        Canary::on("127.0.0.1")
    }

    pub fn on(ip: &str) -> Canary {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        Canary { listener, port }
    }

    /// Connections that completed the handshake with this listener (queued, never served).
    pub fn connections(&self) -> usize {
        let mut n = 0;
        while self.listener.accept().is_ok() {
            n += 1;
        }
        n
    }
}

/// A unique DNS name under a test-only suffix.
pub fn unique_name(prefix: &str) -> String {
    format!("{}.buildd-tests.example", super::unique(prefix))
}
