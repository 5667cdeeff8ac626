//! Request hardening: checks of the raw request head that Pingora's parser lets through or
//! resolves silently (it drops Content-Length when Transfer-Encoding is present and accepts
//! bare LF line ends). Pure functions; the proxy answers with the status they return.

/// Limits of the request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 400 or 431.
    pub status: u16,
    pub reason: &'static str,
}

const fn reject(status: u16, reason: &'static str) -> Result<(), Rejection> {
    Err(Rejection { status, reason })
}

/// Checks the raw HTTP/1 request head (request line + headers, up to and including the blank
/// line).
pub fn check_head(raw: &[u8], limits: HeadLimits) -> Result<(), Rejection> {
    if raw.len() > limits.max_header_bytes {
        return reject(431, "request header fields too large");
    }
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            return reject(400, "bare LF line ending in the request head");
        }
    }
    let mut lines = raw
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let _request_line = lines.next();
    let mut count = 0;
    let mut content_lengths = 0;
    let mut transfer_encoding = false;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return reject(400, "obsolete line folding in a header");
        }
        count += 1;
        if count > limits.max_headers {
            return reject(431, "too many request header fields");
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return reject(400, "header line without a colon");
        };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            content_lengths += 1;
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) || value.len() > 19 {
                return reject(400, "invalid Content-Length");
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
        }
    }
    if content_lengths > 1 {
        return reject(400, "duplicate Content-Length");
    }
    if content_lengths == 1 && transfer_encoding {
        return reject(400, "both Content-Length and Transfer-Encoding");
    }
    Ok(())
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_header_bytes: 1024,
        max_headers: 4,
    };

    fn status(raw: &str) -> Option<u16> {
        check_head(raw.as_bytes(), LIMITS).err().map(|r| r.status)
    }

    #[test]
    fn good_requests_pass() {
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), None);
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"),
            None
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            None
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Some(400)
        );
        assert_eq!(status("GET / HTTP/1.1\nHost: a\r\n\r\n"), Some(400));
        assert_eq!(
            status("GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n"),
            Some(400)
        );
    }

    #[test]
    fn limits_give_431() {
        assert_eq!(
            status("GET / HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\n\r\n"),
            Some(431)
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert_eq!(status(&big), Some(431));
    }
}
