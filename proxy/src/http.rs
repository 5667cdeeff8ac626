//! The request path: Pingora's [`ProxyHttp`] filters. Hardening checks, route lookup (lock-free
//! snapshot), admission to the service's active upstream set, upstream choice and retries,
//! forwarding headers, body limits, drain-deadline cuts, metrics and access log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::ErrorType::HTTPStatus;
use pingora::prelude::*;
use pingora::protocols::ALPN;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::access_log::{AccessEntry, AccessLog};
use crate::acme::TlsState;
use crate::acme::http01::{CHALLENGE_PATH, challenge_token};
use crate::config::ProxyConfig;
use crate::drain::Drain;
use crate::hardening::{self, HeadLimits};
use crate::pages;
use crate::routes::RouteSpec;
use crate::state::ProxyState;
use crate::upstream::{SetGuard, UpstreamGuard};
use crate::wake::Held;

/// The proxy application Pingora runs.
#[derive(Debug)]
pub struct StackpadProxy {
    state: Arc<ProxyState>,
    limits: HeadLimits,
    access_log: bool,
    connect_retries: usize,
    connect_timeout: Duration,
    upstream_idle_timeout: Duration,
    /// Dead-peer detection of upstream connections (`upstream_dead_after_ms`).
    upstream_keepalive: pingora::protocols::TcpKeepalive,
    header_read_timeout: Duration,
    body_read_timeout: Duration,
    idle_timeout_secs: u64,
    /// Certificates: answers http-01 requests from the shared store.
    tls: Option<Arc<TlsState>>,
    /// A TLS listener exists: plain requests to routes without `allow_plain_http` get a 308.
    redirect_to_https: bool,
    /// ClickHouse access log rows (requests that matched a route).
    access_rows: Option<Arc<AccessLog>>,
    /// Shutdown or upgrade in progress: responses close their connection.
    drain: Arc<Drain>,
}

impl StackpadProxy {
    /// Answers ACME http-01 requests from `tls` and, when `redirect_to_https`, sends plain
    /// requests of routes that do not allow plain HTTP to HTTPS.
    pub fn with_tls(mut self, tls: Arc<TlsState>, redirect_to_https: bool) -> Self {
        self.tls = Some(tls);
        self.redirect_to_https = redirect_to_https;
        self
    }

    /// Writes one access log row per routed request to `writer`.
    pub fn with_access_log(mut self, writer: Option<Arc<AccessLog>>) -> Self {
        self.access_rows = writer;
        self
    }

    /// Closes each connection after its response once `drain` is draining.
    pub fn with_drain(mut self, drain: Arc<Drain>) -> Self {
        self.drain = drain;
        self
    }

    pub fn new(state: Arc<ProxyState>, config: &ProxyConfig) -> Self {
        Self {
            state,
            limits: config.head_limits(),
            access_log: config.access_log,
            connect_retries: config.connect_retries,
            connect_timeout: ProxyConfig::ms(config.upstream_connect_timeout_ms),
            upstream_idle_timeout: ProxyConfig::ms(config.upstream_idle_timeout_ms),
            upstream_keepalive: config.upstream_keepalive(),
            header_read_timeout: ProxyConfig::ms(config.header_read_timeout_ms),
            body_read_timeout: ProxyConfig::ms(config.body_read_timeout_ms),
            idle_timeout_secs: config.idle_timeout_ms.div_ceil(1000),
            tls: None,
            redirect_to_https: false,
            access_rows: None,
            drain: Arc::default(),
        }
    }
}

/// Per-request state.
#[derive(Debug)]
pub struct RequestCtx {
    start: Instant,
    route: Option<Arc<RouteSpec>>,
    /// Admission to the upstream set; held until the request (or upgraded connection) ends.
    admission: Option<SetGuard>,
    upstream: Option<UpstreamGuard>,
    tried: Tried,
    body_bytes: u64,
    upgraded: bool,
    counted: bool,
    /// Counted in the upgraded-connections gauge.
    upgraded_counted: bool,
    /// A later request on a kept-alive HTTP/1 connection.
    reused_connection: bool,
    /// Status of a response the proxy wrote itself.
    own_status: Option<u16>,
    /// The start of a chunked request body read before the upstream was chosen, when
    /// Pingora's retry buffer could not keep all of it: sent ahead of the next body chunk.
    body_prefix: Option<Bytes>,
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        // The long-lived registration must be gone before anything else can reuse the fd.
        self.upstream.take();
        self.admission.take();
    }
}

async fn respond(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    detail: &str,
    close: bool,
) -> Result<bool> {
    let page = pages::page(status, detail, close);
    if close {
        session.set_keepalive(None);
    }
    ctx.own_status = Some(status);
    session
        .write_response_header(Box::new(page.header), false)
        .await?;
    session.write_response_body(Some(page.body), true).await?;
    Ok(true)
}

impl StackpadProxy {
    /// `GET /.well-known/acme-challenge/<token>` on the plain listener: the key authorization
    /// of a waiting order, from the shared store; 404 for anything else. Never routed upstream.
    async fn answer_http01(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let path = session.req_header().uri.path().to_owned();
        let answer = match (&self.tls, challenge_token(&path)) {
            (Some(tls), Some(token)) => tls.http01_answer(token).await,
            _ => None,
        };
        let Some(answer) = answer else {
            return respond(
                session,
                ctx,
                404,
                "no ACME challenge waiting for this token",
                false,
            )
            .await;
        };
        let mut header = ResponseHeader::build(200, Some(2))?;
        header.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
        header.insert_header(http::header::CONTENT_LENGTH, answer.len().to_string())?;
        ctx.own_status = Some(200);
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session
            .write_response_body(Some(Bytes::from(answer)), true)
            .await?;
        Ok(true)
    }
}

/// Request headers the proxy sets itself for the upstream.
const FORWARDING_HEADERS: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
];

/// The upstreams a request was tried on, inline for the usual few (no allocation per request).
#[derive(Debug)]
struct Tried {
    inline: [SocketAddr; 4],
    len: usize,
    /// All of them, once there are more than fit inline.
    more: Vec<SocketAddr>,
}

impl Default for Tried {
    fn default() -> Self {
        Self {
            inline: [SocketAddr::from(([0, 0, 0, 0], 0)); 4],
            len: 0,
            more: Vec::new(),
        }
    }
}

impl Tried {
    fn push(&mut self, addr: SocketAddr) {
        if self.len < self.inline.len() {
            self.inline[self.len] = addr;
        } else {
            if self.more.is_empty() {
                self.more.extend_from_slice(&self.inline);
            }
            self.more.push(addr);
        }
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    fn as_slice(&self) -> &[SocketAddr] {
        if self.more.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.more
        }
    }
}

/// How much of a chunked request body is read (and its framing checked) before an upstream
/// is chosen: Pingora's retry buffer, which sends it ahead of the rest.
const PREREAD_BYTES: usize = 64 * 1024;

impl StackpadProxy {
    /// Reads the start of a chunked HTTP/1 request body before any upstream is chosen, so a
    /// body whose chunk framing is broken (a size that is not hex or overflows, data longer
    /// than its chunk size, garbage where a CRLF belongs) is refused with 400 before a byte of
    /// the request leaves the proxy. A body longer than `PREREAD_BYTES` is checked up to
    /// there; the rest streams (and a later framing error ends the upstream request unfinished).
    /// Requests sending `Expect: 100-continue` wait for the upstream's 100 and are not read
    /// ahead. Content-Length bodies need no read-ahead: their framing is the header alone,
    /// checked by `hardening::check_head`, and bytes past it are the next request.
    async fn preread_chunked_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        max_body: u64,
    ) -> Result<bool> {
        let headers = &session.req_header().headers;
        let chunked = headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .any(|v| {
                v.as_bytes()
                    .windows(7)
                    .any(|w| w.eq_ignore_ascii_case(b"chunked"))
            });
        let expect = headers.contains_key(http::header::EXPECT);
        if !chunked || expect || session.as_downstream().as_http1().is_none() {
            return Ok(false);
        }
        // Everything read from here is kept by Pingora and sent upstream first.
        session.enable_retry_buffering();
        let mut read: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        while total < PREREAD_BYTES {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    total += chunk.len();
                    read.push(chunk);
                    if total as u64 > max_body {
                        let detail = format!("request body above {max_body} bytes");
                        return respond(session, ctx, 413, &detail, true).await;
                    }
                    // The chunk that ends the body comes with no data, so stopping here means
                    // the body is not finished: Pingora reads on, and the next chunk carries
                    // what the retry buffer could not hold.
                    if session.retry_buffer_truncated() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.state.metrics.rejected_requests.inc();
                    let (status, detail) = if matches!(e.etype(), ReadTimedout) {
                        (408, "request body took too long")
                    } else {
                        (400, "malformed chunked request body")
                    };
                    return respond(session, ctx, status, detail, true).await;
                }
            }
        }
        if session.retry_buffer_truncated() {
            if session.is_body_done() {
                // Pingora would send nothing of a finished body it could not buffer.
                let detail = "the request body could not be kept for the upstream";
                return respond(session, ctx, 500, detail, true).await;
            }
            ctx.body_prefix = Some(read.concat().into());
        }
        Ok(false)
    }
}

/// 308 to the same host and path over HTTPS (the method and body are kept by the client).
async fn redirect_to_https(session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    let host = request_host(session).unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    let target = session
        .req_header()
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str());
    let location = format!("https://{host}{target}");
    let mut header = ResponseHeader::build(308, Some(3))?;
    header.insert_header(http::header::LOCATION, location)?;
    header.insert_header(http::header::CONTENT_LENGTH, "0")?;
    ctx.own_status = Some(308);
    session
        .write_response_header(Box::new(header), true)
        .await?;
    Ok(true)
}

fn request_host(session: &Session) -> Option<&str> {
    let req = session.req_header();
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

/// Where a request goes, decided from the current snapshot without awaiting.
enum Routing {
    NoHost,
    NotFound(String),
    Unavailable(Arc<RouteSpec>),
    Admitted(Arc<RouteSpec>, SetGuard),
}

impl StackpadProxy {
    fn route_request(&self, session: &Session) -> Routing {
        let Some(host) = request_host(session) else {
            return Routing::NoHost;
        };
        let path = session
            .req_header()
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str());
        // One lock-free load of the current snapshot; again if a switch retired the set
        // between the load and the admission.
        for _ in 0..8 {
            let snap = self.state.snapshot();
            let Some(route) = snap.routes.lookup(host, path) else {
                return Routing::NotFound(host.to_owned());
            };
            let Some(set) = snap.services.get(&route.service_id) else {
                return Routing::Unavailable(Arc::clone(route));
            };
            if let Some(guard) = set.admit() {
                if !guard.set().any_healthy() {
                    return Routing::Unavailable(Arc::clone(route));
                }
                return Routing::Admitted(Arc::clone(route), guard);
            }
        }
        let route = self.state.snapshot().routes.lookup(host, path).cloned();
        route.map_or_else(|| Routing::NotFound(host.to_owned()), Routing::Unavailable)
    }

    /// A sleeping service (#17): waits for its wake, then routes the request again; still
    /// unavailable after the wait timeout (answered 503 with Retry-After).
    async fn hold_for_wake(&self, session: &Session, route: Arc<RouteSpec>) -> Routing {
        let host = request_host(session).unwrap_or_default().to_owned();
        match self.state.wakes.hold(&route.service_id, &host).await {
            // Not sleeping any more: woken between the check and the hold.
            Held::Woken | Held::NotSleeping => self.route_request(session),
            Held::TimedOut => Routing::Unavailable(route),
        }
    }
}

#[async_trait]
impl ProxyHttp for StackpadProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            route: None,
            admission: None,
            upstream: None,
            tried: Tried::default(),
            body_bytes: 0,
            upgraded: false,
            counted: false,
            reused_connection: false,
            upgraded_counted: false,
            own_status: None,
            body_prefix: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.state.metrics.active_requests.inc();
        ctx.counted = true;
        // Hardening of the raw HTTP/1 head (HTTP/2 framing is checked by the h2 codec).
        if let Some(h1) = session.as_downstream().as_http1() {
            let raw = h1.get_headers_raw_bytes();
            if let Err(r) = hardening::check_head(&raw, self.limits) {
                self.state.metrics.rejected_requests.inc();
                return respond(session, ctx, r.status, r.reason, true).await;
            }
            // Only a connection's first request: a later one's head timing is Pingora's
            // keep-alive read timeout (and this saves a clock read per kept-alive request).
            if !ctx.reused_connection
                && let Some(age) = connection_age(session)
                && age > self.header_read_timeout
            {
                self.state.metrics.rejected_requests.inc();
                return respond(session, ctx, 408, "request header took too long", true).await;
            }
        } else if session.req_header().headers.len() > self.limits.max_headers {
            return respond(session, ctx, 431, "too many request header fields", true).await;
        }
        session.set_read_timeout(Some(self.body_read_timeout));
        // Pingora turns keep-alive off for requests read after a shutdown began; keep it off.
        if session.get_keepalive().is_some() && !self.drain.is_draining() {
            session.set_keepalive(Some(self.idle_timeout_secs));
        } else {
            session.set_keepalive(None);
        }

        let plain = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_none();
        if plain && session.req_header().uri.path().starts_with(CHALLENGE_PATH) {
            return self.answer_http01(session, ctx).await;
        }

        let mut routing = self.route_request(session);
        if let Routing::Unavailable(route) = &routing
            && self.state.wakes.is_sleeping(&route.service_id)
        {
            routing = self.hold_for_wake(session, Arc::clone(route)).await;
        }
        let (route, admission) = match routing {
            Routing::NoHost => {
                return respond(session, ctx, 400, "the request has no Host", true).await;
            }
            Routing::NotFound(host) => {
                let detail = format!("no route for host {host:?}");
                return respond(session, ctx, 404, &detail, false).await;
            }
            Routing::Unavailable(route) => {
                let detail = format!("no healthy upstream for service {:?}", route.service_id);
                ctx.route = Some(route);
                return respond(session, ctx, 503, &detail, false).await;
            }
            Routing::Admitted(route, admission) => (route, admission),
        };
        ctx.route = Some(Arc::clone(&route));
        if plain && self.redirect_to_https && !route.allow_plain_http {
            return redirect_to_https(session, ctx).await;
        }
        ctx.admission = Some(admission);

        let declared = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > route.max_body_bytes) {
            let detail = format!("request body above {} bytes", route.max_body_bytes);
            return respond(session, ctx, 413, &detail, true).await;
        }
        if session.is_upgrade_req() {
            ctx.upgraded = true;
            return Ok(false);
        }
        self.preread_chunked_body(session, ctx, route.max_body_bytes)
            .await
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        Some(Box::new(()))
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        _prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        ctx.reused_connection = true;
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(admission) = &ctx.admission else {
            return Error::e_explain(HTTPStatus(503), "no upstream set");
        };
        let Some(upstream) = admission.set().pick(ctx.tried.as_slice()) else {
            return Error::e_explain(HTTPStatus(503), "no healthy upstream left to try");
        };
        ctx.tried.push(upstream.addr);
        let mut peer = HttpPeer::new(upstream.addr, false, String::new());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.idle_timeout = Some(self.upstream_idle_timeout);
        peer.options.tcp_keepalive = Some(self.upstream_keepalive.clone());
        // gRPC (and any HTTP/2 request) goes upstream as h2c with prior knowledge.
        if is_grpc(session) {
            peer.options.alpn = ALPN::H2;
        }
        ctx.upstream = Some(UpstreamGuard::new(upstream));
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.state.metrics.upstream_connect_failures.inc();
        if let Some(up) = ctx.upstream.take()
            && up.upstream().eject()
        {
            self.state.metrics.passive_ejections.inc();
            tracing::warn!(upstream = %peer, "upstream ejected after a connect failure");
        }
        // Nothing was sent yet: another upstream of the same set may take the request.
        if ctx.tried.len() <= self.connect_retries {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let dead = peer_went_silent(&e);
        let mut e = e.more_context(format!("Peer: {peer}"));
        if dead
            && let Some(up) = ctx.upstream.take()
            && up.upstream().eject()
        {
            self.state.metrics.passive_ejections.inc();
            tracing::warn!(upstream = %peer, "upstream ejected: it stopped answering mid-request");
        }
        // Pingora's rule: only an idempotent request whose body is still all buffered can be
        // sent again, and only before any of the response went downstream.
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        if !replayable {
            e.set_retry(false);
        } else if dead {
            // Its node is gone: another upstream of the set takes the request.
            e.set_retry(ctx.tried.len() <= self.connect_retries);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.upgraded
            && let Some(admission) = &mut ctx.admission
        {
            admission.register_long_lived(fd);
            if !ctx.upgraded_counted {
                ctx.upgraded_counted = true;
                self.state.metrics.active_upgraded.inc();
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Whatever the client sent in these is replaced; most requests carry none, so one look
        // over the names comes before any removal.
        if upstream_request
            .headers
            .keys()
            .any(|k| FORWARDING_HEADERS.contains(&k.as_str()))
        {
            for name in FORWARDING_HEADERS {
                upstream_request.remove_header(name);
            }
        }
        if let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            // Formatted on the stack: one allocation, the header value's own.
            let mut buf = [0u8; 48];
            let mut out = &mut buf[..];
            let _ = std::io::Write::write_fmt(&mut out, format_args!("{ip}"));
            let len = 48 - out.len();
            let value = http::HeaderValue::from_bytes(&buf[..len])
                .expect("an IP address is a valid header value");
            upstream_request.insert_header("x-forwarded-for", value)?;
        }
        let tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        let proto = http::HeaderValue::from_static(if tls { "https" } else { "http" });
        upstream_request.insert_header("x-forwarded-proto", proto)?;
        // The Host value is shared with the request's buffer, not copied.
        let host = match session.req_header().headers.get(http::header::HOST) {
            Some(host) => Some(host.clone()),
            None => request_host(session).and_then(|h| http::HeaderValue::from_str(h).ok()),
        };
        if let Some(host) = host {
            upstream_request.insert_header("x-forwarded-host", host)?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(prefix) = ctx.body_prefix.take() {
            *body = Some(match body.take() {
                Some(rest) => [prefix, rest].concat().into(),
                None => prefix,
            });
        }
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            let limit = ctx.route.as_ref().map_or(u64::MAX, |r| r.max_body_bytes);
            if ctx.body_bytes > limit && !ctx.upgraded {
                return Error::e_explain(
                    HTTPStatus(413),
                    format!("request body above {limit} bytes"),
                );
            }
        }
        if ctx.admission.as_ref().is_some_and(|a| a.set().is_closing()) {
            return Error::e_explain(ConnectionClosed, "drain deadline of the old upstream set");
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        // A request read before a shutdown or upgrade began: its answer ends the connection.
        if self.drain.is_draining() {
            session.set_keepalive(None);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if ctx.admission.as_ref().is_some_and(|a| a.set().is_closing()) {
            return Error::e_explain(ConnectionClosed, "drain deadline of the old upstream set");
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            HTTPStatus(code) => *code,
            ConnectTimedout => 504,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    WriteError | ReadError | ConnectionClosed => 0,
                    ReadTimedout => 408,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let detail = match code {
                502 => "the upstream could not be reached".to_owned(),
                503 => "no healthy upstream".to_owned(),
                504 => "the upstream did not answer in time".to_owned(),
                _ => e
                    .context
                    .as_ref()
                    .map(|c| c.as_str().to_owned())
                    .unwrap_or_default(),
            };
            let _ = respond(session, ctx, code, &detail, code < 500).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx.upgraded_counted {
            self.state.metrics.active_upgraded.dec();
        }
        if ctx.counted {
            self.state.metrics.active_requests.dec();
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.own_status)
            .unwrap_or(0);
        let elapsed = ctx.start.elapsed();
        match &ctx.admission {
            Some(a) => a.set().metrics.record(status, elapsed),
            None => self.state.metrics.unrouted.record(status, elapsed),
        }
        if self.access_log {
            let req = session.req_header();
            tracing::info!(
                target: "stackpad_proxy::access",
                method = %req.method,
                host = request_host(session).unwrap_or(""),
                path = req.uri.path(),
                status,
                service = ctx.route.as_ref().map_or("", |r| r.service_id.as_str()),
                upstream = ctx.upstream.as_ref().map(|u| u.upstream().addr.to_string()).unwrap_or_default(),
                client = session.client_addr().map(|a| a.to_string()).unwrap_or_default(),
                duration_us = elapsed.as_micros() as u64,
                error = e.map(|e| e.to_string()).unwrap_or_default(),
            );
        }
        // Requests that matched no route have no owner to show them to: no row.
        if let (Some(writer), Some(route)) = (&self.access_rows, &ctx.route) {
            writer.record(access_entry(session, ctx, route, status, elapsed));
        }
        ctx.upstream.take();
        ctx.admission.take();
    }
}

/// The access log facts of a finished request.
fn access_entry<'a>(
    session: &'a Session,
    ctx: &'a RequestCtx,
    route: &'a RouteSpec,
    status: u16,
    elapsed: Duration,
) -> AccessEntry<'a> {
    let req = session.req_header();
    let started = std::time::SystemTime::now()
        .checked_sub(elapsed)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    let upstream = ctx.upstream.as_ref().map(|u| u.upstream());
    AccessEntry {
        ts_ns: i64::try_from(started.as_nanos()).unwrap_or(i64::MAX),
        organization_id: &route.organization_id,
        project_id: &route.project_id,
        environment_id: &route.environment_id,
        service_id: &route.service_id,
        deployment_id: upstream.map_or("", |u| u.spec.deployment_id.as_str()),
        route_id: &route.route_id,
        method: req.method.as_str(),
        host: request_host(session).unwrap_or(""),
        path_and_query: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        status,
        duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        request_bytes: session.body_bytes_read() as u64,
        response_bytes: session.body_bytes_sent() as u64,
        upstream: upstream.map(|u| u.addr.to_string()).unwrap_or_default(),
        client_ip: session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default(),
        request_id: req
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    }
}

/// The upstream connection failed because its peer stopped answering (keep-alive probes or
/// data unacknowledged for `upstream_dead_after_ms`): the kernel's `ETIMEDOUT`.
fn peer_went_silent(e: &Error) -> bool {
    e.root_cause()
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
}

fn is_grpc(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// How long since the downstream connection was accepted. For the first request on a
/// connection this bounds the time the request head took to arrive.
fn connection_age(session: &Session) -> Option<Duration> {
    let digest = session.digest()?;
    let established = digest.timing_digest.first()?.as_ref()?.established_ts;
    established.elapsed().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tried_keeps_every_address_past_the_inline_ones() {
        let mut tried = Tried::default();
        assert!(tried.as_slice().is_empty());
        let addrs: Vec<SocketAddr> = (1..=6)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        for (i, a) in addrs.iter().enumerate() {
            tried.push(*a);
            assert_eq!(tried.as_slice(), &addrs[..=i]);
            assert_eq!(tried.len(), i + 1);
        }
    }
}
