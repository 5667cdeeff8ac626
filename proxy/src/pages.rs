//! The proxy's own responses: small HTML pages that say what went wrong.

use bytes::Bytes;
use pingora::http::ResponseHeader;

/// A response the proxy writes itself.
#[derive(Debug)]
pub struct Page {
    pub header: ResponseHeader,
    pub body: Bytes,
}

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECS: u32 = 5;

/// The page for `status`, with `detail` (already plain text) in it. `close` adds
/// `Connection: close` (after framing errors the connection must not be reused).
pub fn page(status: u16, detail: &str, close: bool) -> Page {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = format!(
        "<!doctype html>\n<html><head><title>{status} {reason}</title></head>\n\
         <body><h1>{status} {reason}</h1>\n<p>{}</p>\n<hr><p>stackpad-proxy</p></body></html>\n",
        html_escape(detail)
    );
    let mut header = ResponseHeader::build(status, Some(6)).expect("valid status");
    let _ = header.insert_header("content-type", "text/html; charset=utf-8");
    let _ = header.insert_header("content-length", body.len().to_string());
    let _ = header.insert_header("cache-control", "no-store");
    if status == 503 {
        let _ = header.insert_header("retry-after", RETRY_AFTER_SECS.to_string());
    }
    if close {
        let _ = header.insert_header("connection", "close");
    }
    Page {
        header,
        body: Bytes::from(body),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_and_carry_retry_after() {
        let p = page(503, "no healthy upstream for <svc>", false);
        assert_eq!(p.header.status.as_u16(), 503);
        assert_eq!(p.header.headers.get("retry-after").unwrap(), "5");
        let body = std::str::from_utf8(&p.body).unwrap();
        assert!(body.contains("&lt;svc&gt;") && body.contains("503 Service Unavailable"));
        let p = page(400, "bad", true);
        assert_eq!(p.header.headers.get("connection").unwrap(), "close");
        assert!(p.header.headers.get("retry-after").is_none());
    }
}
