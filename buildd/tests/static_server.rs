//! buildd's static file server (`static-server/main.rs`, the binary images of static sites
//! run), run as built for the images and asked over HTTP: a single-page app's fallback, and a
//! site of many pages (`STATIC_SPA=0`) with prerendered `<page>.html` files and its 404 page.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use buildd::dockerfile::STATIC_SERVER_BINARY;

/// The server running on a port of its own; killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, site: &Path, spa: bool) -> Server {
    let binary = dir.join("static-server");
    if !binary.exists() {
        std::fs::write(&binary, STATIC_SERVER_BINARY).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(&binary);
    cmd.env("PORT", port.to_string()).env("STATIC_ROOT", site);
    if !spa {
        cmd.env("STATIC_SPA", "0");
    }
    let child = cmd.spawn().unwrap();
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the static server did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// GET `path`: (status code, body).
fn get(server: &Server, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: t\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[test]
fn single_page_apps_fall_back_and_sites_of_many_pages_serve_their_pages_and_404() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("www");
    for (file, text) in [
        ("index.html", "home"),
        ("about.html", "about page"),
        ("404.html", "custom not found"),
        ("docs/index.html", "docs"),
        ("assets/app.js", "js"),
    ] {
        let path = site.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    let spa = start(dir.path(), &site, true);
    assert_eq!(get(&spa, "/"), (200, "home".into()));
    assert_eq!(get(&spa, "/about"), (200, "about page".into()));
    assert_eq!(get(&spa, "/docs"), (200, "docs".into()));
    // A client-side route gets the app; a missing file with an extension does not.
    assert_eq!(get(&spa, "/some/route"), (200, "home".into()));
    assert_eq!(get(&spa, "/assets/missing.js").0, 404);
    assert_eq!(get(&spa, "/missing.js"), (404, "not found\n".into()));

    let pages = start(dir.path(), &site, false);
    assert_eq!(get(&pages, "/about"), (200, "about page".into()));
    assert_eq!(get(&pages, "/docs/"), (200, "docs".into()));
    assert_eq!(get(&pages, "/assets/app.js"), (200, "js".into()));
    // No fallback to the home page: the site's own 404 page, with a 404.
    assert_eq!(get(&pages, "/some/route"), (404, "custom not found".into()));
    assert_eq!(get(&pages, "/../etc/passwd").0, 404);
}
