//! The static file server of static sites (Vite single-page apps, Astro, SvelteKit's
//! adapter-static) in images stackpad-buildd generates.
//!
//! Standard library only, linked statically by buildd's build script and put alone in an image
//! `FROM scratch` beside the site's files, so the image is the site plus this file. Serves
//! `STATIC_ROOT` (default `/www`) on `PORT` (default 8080): GET and HEAD; a folder serves its
//! `index.html`; a path whose last segment has no extension and names no file is served
//! `<path>.html` when there is one (prerendered pages), else the root's `index.html` with 200
//! (the SPA fallback: the app's router takes the path from there) unless `STATIC_SPA=0` (sites
//! of many pages); any other missing file is a 404, with the root's `404.html` as its body when
//! a site of many pages has one. Files under `/assets/` (Vite's hashed names) are cached for a
//! year, everything else is revalidated. HTTP/1.1 keep-alive; one thread per connection, at
//! most `MAX_CONNECTIONS` at once.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const MAX_CONNECTIONS: usize = 512;
/// Longest request head (request line and headers) read.
const MAX_HEAD: usize = 16 * 1024;
/// An idle keep-alive connection is closed after this.
const IDLE: Duration = Duration::from_secs(30);

fn main() {
    let root = PathBuf::from(std::env::var("STATIC_ROOT").unwrap_or_else(|_| "/www".into()));
    let port = match std::env::var("PORT") {
        Ok(p) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => fail(&format!("PORT {p:?} is not a port number")),
        },
        Err(_) => 8080,
    };
    let listener = TcpListener::bind(("0.0.0.0", port))
        .unwrap_or_else(|e| fail(&format!("cannot listen on port {port}: {e}")));
    println!("serving {} on port {port}", root.display());
    let spa = std::env::var("STATIC_SPA").map_or(true, |v| v != "0");
    let root = Arc::new(Site { root, spa });
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (root, done) = (root.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = serve(stream, &root);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("static-server: {message}");
    std::process::exit(1)
}

/// What is served: the folder, and whether it is a single-page app.
struct Site {
    root: PathBuf,
    spa: bool,
}

/// A request as far as a static server cares.
struct Request {
    method: String,
    /// The path, percent-decoded, without query or fragment.
    path: Vec<u8>,
    keep_alive: bool,
    /// A body was announced (GET and HEAD have none): the connection is closed after.
    has_body: bool,
}

/// Serves the requests of one connection until it closes.
fn serve(stream: TcpStream, site: &Site) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let request = match read_request(&mut reader)? {
            Some(Ok(r)) => r,
            Some(Err(status)) => return respond_empty(&mut out, status, false, false),
            None => return Ok(()),
        };
        let keep = request.keep_alive && !request.has_body;
        let head = request.method == "HEAD";
        if request.method != "GET" && !head {
            respond_empty(&mut out, 405, false, keep)?;
        } else {
            match resolve(site, &request.path) {
                Some(found) => send_file(&mut out, &found, 200, head, keep)?,
                None => match open(&site.root.join("404.html"), false) {
                    Some(page) if !site.spa => send_file(&mut out, &page, 404, head, keep)?,
                    _ => respond_empty(&mut out, 404, head, keep)?,
                },
            }
        }
        if !keep {
            return Ok(());
        }
    }
}

/// Reads one request head: `None` at a clean end of the connection, `Some(Err(status))` for a
/// request that cannot be served.
fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Result<Request, u16>>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = (&mut *reader)
            .take((MAX_HEAD - head.len().min(MAX_HEAD)) as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(if head.is_empty() {
                None
            } else {
                Some(Err(400))
            });
        }
        if head.len() + n > MAX_HEAD {
            return Ok(Some(Err(431)));
        }
        let blank = line == b"\r\n" || line == b"\n";
        if blank && head.is_empty() {
            // Stray line breaks between requests are allowed.
            continue;
        }
        head.extend_from_slice(&line);
        if blank {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let mut words = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Ok(Some(Err(400)));
    };
    let mut keep_alive = version == "HTTP/1.1";
    let mut has_body = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "connection" if value.contains("close") => keep_alive = false,
            "connection" if value.contains("keep-alive") => keep_alive = true,
            "content-length" => has_body |= value != "0",
            "transfer-encoding" => has_body = true,
            _ => {}
        }
    }
    let raw = target.split(['?', '#']).next().unwrap_or_default();
    let Some(path) = percent_decode(raw.as_bytes()).filter(|p| p.first() == Some(&b'/')) else {
        return Ok(Some(Err(400)));
    };
    Ok(Some(Ok(Request {
        method: method.to_owned(),
        path,
        keep_alive,
        has_body,
    })))
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    (!out.contains(&0)).then_some(out)
}

/// A file to send: where it is and what the client is told about it.
struct Found {
    path: PathBuf,
    file: File,
    len: u64,
    immutable: bool,
}

/// The file a path names under `root`, a folder's `index.html`, or the SPA fallback.
fn resolve(site: &Site, path: &[u8]) -> Option<Found> {
    let root = &site.root;
    let mut target = root.to_path_buf();
    let mut last: &[u8] = b"";
    for segment in path.split(|b| *b == b'/') {
        match segment {
            b"" | b"." => {}
            // Nothing above the root; a path that tries gets no fallback either.
            b".." => return None,
            s => {
                target.push(std::ffi::OsStr::new(std::str::from_utf8(s).ok()?));
                last = s;
            }
        }
    }
    let immutable = path.starts_with(b"/assets/");
    if let Some(found) = open(&target, immutable) {
        return Some(found);
    }
    if !last.is_empty() && !last.contains(&b'.') {
        // A page written as `<name>.html` (SvelteKit's prerendered `/about` is about.html).
        let mut page = target.clone().into_os_string();
        page.push(".html");
        if let Some(found) = open(Path::new(&page), false) {
            return Some(found);
        }
    }
    if site.spa && !last.contains(&b'.') {
        return open(&root.join("index.html"), false);
    }
    None
}

/// Opens a regular file, or the `index.html` of a folder.
fn open(path: &Path, immutable: bool) -> Option<Found> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_dir() {
        return open(&path.join("index.html"), false);
    }
    if !meta.is_file() {
        return None;
    }
    let file = File::open(path).ok()?;
    Some(Found {
        path: path.to_path_buf(),
        file,
        len: meta.len(),
        immutable,
    })
}

fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "wasm" => "application/wasm",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

fn connection(keep: bool) -> &'static str {
    if keep { "keep-alive" } else { "close" }
}

fn send_file(
    out: &mut TcpStream,
    found: &Found,
    status: u16,
    head: bool,
    keep: bool,
) -> io::Result<()> {
    let cache = if found.immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let header = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\ncache-control: {cache}\r\n\
         x-content-type-options: nosniff\r\nconnection: {}\r\n\r\n",
        if status == 200 { "OK" } else { "Not Found" },
        content_type(&found.path),
        found.len,
        connection(keep),
    );
    out.write_all(header.as_bytes())?;
    if !head {
        let sent = io::copy(&mut (&found.file).take(found.len), out)?;
        if sent != found.len {
            // The file shrank under us: the length sent is wrong, the connection cannot go on.
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
        }
    }
    out.flush()
}

/// A short text answer; `head`: its headers only.
fn respond_empty(out: &mut TcpStream, status: u16, head: bool, keep: bool) -> io::Result<()> {
    let (reason, body) = match status {
        400 => ("Bad Request", "bad request\n"),
        404 => ("Not Found", "not found\n"),
        405 => ("Method Not Allowed", "method not allowed\n"),
        431 => (
            "Request Header Fields Too Large",
            "request head too large\n",
        ),
        _ => ("Error", "error\n"),
    };
    let allow = if status == 405 {
        "allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\n{allow}connection: {}\r\n\r\n{}",
        body.len(),
        connection(keep),
        if head { "" } else { body },
    );
    out.write_all(text.as_bytes())?;
    out.flush()
}
