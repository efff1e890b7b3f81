//! The connection layer under the router: our own accept loop on hyper, so
//! that a client cannot hold the server's sockets or workers.
//!
//! - A connection whose request head is not complete within
//!   `server.header_read_timeout_secs` of its first byte (or of the
//!   connection, for its first request), or that sits idle between
//!   requests for `server.keep_alive_timeout_secs`, is closed.
//! - A request body must arrive within `server.body_read_timeout_secs` of
//!   the handler's first read (plus a second per 256 KiB received); a late
//!   one is answered 408 and its connection closed.
//! - At most `server.max_connections_per_ip` connections per client address
//!   and `server.max_connections` in all; a connection over either cap gets
//!   one 503 and is closed, so the process never runs out of descriptors.
//! - hyper answers a request it cannot parse (431, 414, 400) with an empty
//!   body; those answers are rewritten on the way out with the API's JSON
//!   error body.

use std::collections::HashMap;

use crate::error_code::ErrorCode;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::api::error::ApiError;
use crate::telemetry;

/// What the connection layer enforces (settings `server.*`).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl ConnLimits {
    /// Also raises the soft open-file limit to the hard one (at start-up),
    /// and keeps the connection cap under it.
    pub fn from_settings(s: &crate::config::Settings) -> Self {
        let descriptors = raise_open_file_limit();
        let fit =
            usize::try_from(descriptors.saturating_sub(RESERVED_DESCRIPTORS).max(64)).unwrap_or(usize::MAX);
        let max_connections = match s.server.max_connections {
            0 => fit.min(DEFAULT_MAX_CONNECTIONS),
            n if n > fit => {
                tracing::warn!(
                    configured = n,
                    open_file_limit = descriptors,
                    "server.max_connections is above what the open-file limit allows; using {fit}"
                );
                fit
            }
            n => n,
        };
        Self {
            header_read_timeout: Duration::from_secs(s.server.header_read_timeout_secs),
            keep_alive_timeout: Duration::from_secs(s.server.keep_alive_timeout_secs),
            body_read_timeout: Duration::from_secs(s.server.body_read_timeout_secs),
            max_connections,
            max_connections_per_ip: s.server.max_connections_per_ip.min(max_connections),
        }
    }
}

/// Descriptors kept free for the catalog, the vector index, model and blob
/// files and outgoing image fetches.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The default cap on connections in all: each may hold a read buffer
/// (up to `MAX_BUF_SIZE`) while its head arrives.
const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// hyper's read buffer per connection: room for a 64 KiB URI (longer ones
/// get 414) and its headers (more get 431).
const MAX_BUF_SIZE: usize = 128 * 1024;

/// Raises the soft open-file limit to the hard one; returns the limit.
pub fn raise_open_file_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// The address a client is counted under: an IPv6 client by its /64 (one
/// host usually holds a whole /64), an IPv4-mapped address as IPv4.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Open connections, in all and per client address.
#[derive(Default)]
struct Registry {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One accepted connection's place in the registry; released on drop.
struct Admitted {
    registry: Arc<Mutex<Registry>>,
    ip: IpAddr,
}

impl Admitted {
    fn admit(registry: &Arc<Mutex<Registry>>, ip: IpAddr, limits: &ConnLimits) -> Option<Self> {
        let mut r = registry.lock();
        let mine = r.per_ip.get(&ip).copied().unwrap_or(0);
        if r.total >= limits.max_connections || mine >= limits.max_connections_per_ip {
            return None;
        }
        r.total += 1;
        *r.per_ip.entry(ip).or_insert(0) += 1;
        metrics::gauge!(telemetry::HTTP_CONNECTIONS).set(r.total as f64);
        Some(Self {
            registry: registry.clone(),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut r = self.registry.lock();
        r.total = r.total.saturating_sub(1);
        if let Some(n) = r.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                r.per_ip.remove(&self.ip);
            }
        }
        metrics::gauge!(telemetry::HTTP_CONNECTIONS).set(r.total as f64);
    }
}

/// What a connection's watchdog reads: milliseconds since the connection
/// was accepted (`NONE` for "not set").
struct Activity {
    start: Instant,
    /// When the first byte of a request head arrived (while no request was
    /// in flight).
    head_started: AtomicU64,
    /// When the last request finished; `NONE` until one has (a connection
    /// that has sent nothing yet gets the header timeout, not keep-alive).
    idle_since: AtomicU64,
    in_flight: AtomicUsize,
}

const NONE: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            head_started: AtomicU64::new(NONE),
            idle_since: AtomicU64::new(NONE),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn read_bytes(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 && self.head_started.load(Ordering::Acquire) == NONE {
            self.head_started.store(self.now(), Ordering::Release);
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NONE, Ordering::Release);
        InFlight(self.clone())
    }

    /// `Some(deadline)` to check again then, or `None` to close now.
    fn next_check(&self, limits: &ConnLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // The request deadline and the body deadline bound a request.
            return Some(Instant::now() + Duration::from_secs(1));
        }
        let now = self.now();
        let (since, limit) = match (
            self.head_started.load(Ordering::Acquire),
            self.idle_since.load(Ordering::Acquire),
        ) {
            (NONE, NONE) => (0, limits.header_read_timeout),
            (NONE, idle) => (idle, limits.keep_alive_timeout),
            (started, _) => (started, limits.header_read_timeout),
        };
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(NONE - 1);
        let due = since.saturating_add(limit_ms);
        (now < due).then(|| self.start + Duration::from_millis(due))
    }
}

/// A request being answered; the connection is not idle meanwhile.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(self.0.now(), Ordering::Release);
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits up to
/// `grace` for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    tls: Option<crate::tls::Tls>,
) -> io::Result<()> {
    let limits = Arc::new(limits);
    let registry = Arc::new(Mutex::new(Registry::default()));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Per-connection errors (reset before accept) are not
                    // the listener's; anything else (EMFILE) gets a pause.
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
                    ) {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(admitted) = Admitted::admit(&registry, client_key(peer.ip()), &limits) else {
            metrics::counter!(telemetry::HTTP_CONNECTIONS_REFUSED).increment(1);
            // A TLS client would not read a plain answer: it is just closed.
            if tls.is_none() {
                tokio::spawn(refuse(stream));
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, limits, watcher) = (app.clone(), limits.clone(), graceful.watcher());
        match &tls {
            None => {
                tokio::spawn(drive(stream, peer, app, limits, admitted, watcher, false));
            }
            Some(tls) => {
                let acceptor = tls.acceptor().clone();
                tokio::spawn(async move {
                    // The handshake is timed like a request head.
                    let handshake = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => drive(stream, peer, app, limits, admitted, watcher, true).await,
                        Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                        Err(_) => {
                            metrics::counter!(telemetry::HTTP_CONNECTIONS_TIMED_OUT).increment(1);
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "in-flight requests outlived the grace period"
        );
    }
    Ok(())
}

/// Serves one accepted connection (over TLS when `tls`) until it ends, or
/// the watchdog finds it slow or idle.
async fn drive<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    limits: Arc<ConnLimits>,
    admitted: Admitted,
    watcher: hyper_util::server::graceful::Watcher,
    tls: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _admitted = admitted;
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
        pending: None,
        linger: None,
        lingered: 0,
    });
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        let body_timeout = limits.body_read_timeout;
        move |req: Request<Incoming>| answer(app.clone(), activity.clone(), peer, body_timeout, req)
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if tls {
        // HTTP/2 only where ALPN can offer it; its streams per connection
        // are capped so that one connection cannot multiply the per-client
        // cap without bound.
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(MAX_BUF_SIZE as u32);
    } else {
        // No cleartext HTTP/2 (h2c): its streams would multiply the
        // per-client cap, and nothing can negotiate it.
        builder = builder.http1_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        // Our watchdog times request heads and idle connections.
        .header_read_timeout(Option::<Duration>::None)
        .max_buf_size(MAX_BUF_SIZE)
        .keep_alive(true);
    let conn = watcher.watch(builder.serve_connection(io, service).into_owned());
    let mut conn = std::pin::pin!(conn);
    loop {
        let Some(check) = activity.next_check(&limits) else {
            tracing::debug!(peer = %peer, "closing a slow or idle connection");
            metrics::counter!(telemetry::HTTP_CONNECTIONS_TIMED_OUT).increment(1);
            return;
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(check) => {}
        }
    }
}

/// Concurrent HTTP/2 streams on one connection.
const H2_MAX_STREAMS: u32 = 32;

/// One request through the router, with the client's address, a body
/// deadline, and the connection marked busy meanwhile.
async fn answer(
    app: Router,
    activity: Arc<Activity>,
    peer: SocketAddr,
    body_timeout: Duration,
    req: Request<Incoming>,
) -> Result<Response, std::convert::Infallible> {
    let _busy = activity.request_started();
    let late = Arc::new(AtomicBool::new(false));
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    let body = DeadlineBody {
        inner: body,
        timeout: body_timeout,
        deadline: None,
        received: 0,
        late: late.clone(),
    };
    let req = Request::from_parts(parts, axum::body::Body::new(body));
    let res = app.oneshot(req).await?;
    if late.load(Ordering::Acquire) {
        let mut res = ApiError::new(
            ErrorCode::BodyTimeout,
            format!(
                "the request body did not arrive within {} s",
                body_timeout.as_secs()
            ),
        )
        .into_response();
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(res);
    }
    Ok(res)
}

/// A request body that fails once its deadline has passed: the body read
/// timeout from the first time the handler reads it, plus a second per
/// `MIN_BODY_RATE` bytes received (a large upload at a fair rate is not
/// cut; the request deadline still bounds it).
struct DeadlineBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Option<(tokio::time::Instant, Pin<Box<tokio::time::Sleep>>)>,
    received: u64,
    late: Arc<AtomicBool>,
}

/// Bytes per second that earn a body more time.
const MIN_BODY_RATE: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let timeout = this.timeout;
        let (start, deadline) = this.deadline.get_or_insert_with(|| {
            let now = tokio::time::Instant::now();
            (now, Box::pin(tokio::time::sleep_until(now + timeout)))
        });
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    let earned = Duration::from_secs_f64(this.received as f64 / MIN_BODY_RATE as f64);
                    deadline.as_mut().reset(*start + timeout + earned);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                ready!(deadline.as_mut().poll(cx));
                this.late.store(true, Ordering::Release);
                Poll::Ready(Some(Err(Box::new(BodyTimeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a connection over a cap: one 503, then close.
async fn refuse(mut stream: TcpStream) {
    let body = ApiError::new(
        ErrorCode::TooManyConnections,
        "too many open connections from this client or in all; retry shortly",
    )
    .body();
    let body = serde_json::to_string(&body).unwrap_or_default();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// The socket, watched: reads mark request heads, and hyper's empty-bodied
/// error answers are rewritten with a JSON body.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    /// A rewritten answer not yet fully written, and how far it got.
    pending: Option<(Vec<u8>, usize)>,
    /// Once the write side is shut: until when unread input is drained.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    lingered: usize,
}

/// After its last answer, a connection reads (and discards) what the
/// client still sends for up to this long, so a client sending a body the
/// server refused unread reads the answer instead of a reset.
const LINGER: Duration = Duration::from_secs(3);
/// At most this much is read while lingering.
const LINGER_BYTES: usize = 64 * 1024 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Watched<S> {
    /// When `buf` is hyper's bare parse-error answer, queues the rewritten
    /// one instead and reports `buf` written (as far as hyper is
    /// concerned; flush finishes it).
    fn take_over(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> io::Result<Option<usize>> {
        let Some(rewritten) = rewrite_parse_error(buf) else {
            return Ok(None);
        };
        self.pending = Some((rewritten, 0));
        if let Poll::Ready(Err(e)) = self.drain(cx) {
            return Err(e);
        }
        Ok(Some(buf.len()))
    }

    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, at)) = &mut self.pending {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *at += n;
            if *at == bytes.len() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.activity.read_bytes();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(written) = self.take_over(cx, buf)? {
            return Poll::Ready(Ok(written));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (nonempty.next(), nonempty.next())
            && let Some(written) = self.take_over(cx, only)?
        {
            return Poll::Ready(Ok(written));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Shuts the write side, then lingers: closing a socket with unread
    /// input resets the connection, and the client loses the answer.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        let this = &mut *self;
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut scratch = [0u8; 16 * 1024];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    this.lingered += buf.filled().len();
                    if this.lingered > LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                // End of input, or an error: done.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    if let Some(deadline) = this.linger.as_mut() {
                        ready!(deadline.as_mut().poll(cx));
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

/// hyper's own answer to a request it could not parse is a bare head
/// (`HTTP/1.1 4xx …`, `content-length: 0`, no body); every answer of the
/// application to an error carries a JSON body. Returns the same answer
/// with the API's error body, or `None` for anything else.
fn rewrite_parse_error(buf: &[u8]) -> Option<Vec<u8>> {
    if buf.len() > 1024 || !buf.starts_with(b"HTTP/1.") {
        return None;
    }
    let head = std::str::from_utf8(buf).ok()?;
    let rest = head
        .strip_prefix("HTTP/1.1 4")
        .or_else(|| head.strip_prefix("HTTP/1.0 4"))?;
    if !head.ends_with("\r\n\r\n") {
        return None;
    }
    let (status_line, headers) = head.split_once("\r\n")?;
    let headers = headers.strip_suffix("\r\n\r\n").unwrap_or_default();
    if !headers
        .split("\r\n")
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"))
    {
        return None;
    }
    let (code, message) = match rest.get(..2)? {
        "31" => (
            ErrorCode::HeadersTooLarge,
            "the request's headers are larger than this server accepts",
        ),
        "14" => (
            ErrorCode::UriTooLong,
            "the request's URI is longer than this server accepts",
        ),
        "00" => (
            ErrorCode::MalformedRequest,
            "the request is not valid HTTP/1.1 (request line, a header, or the URI)",
        ),
        _ => return None,
    };
    let body = serde_json::json!({"error": {"code": code.as_str(), "message": message}}).to_string();
    let mut out = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for h in headers.split("\r\n") {
        let name = h.split(':').next().unwrap_or_default();
        if !name.eq_ignore_ascii_case("content-length") && !name.eq_ignore_ascii_case("connection") {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_parse_errors_get_a_json_body() {
        let out = rewrite_parse_error(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 00:00:00 GMT\r\n\r\n",
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("date: Mon"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "headers_too_large");
    }

    #[test]
    fn application_answers_are_left_alone() {
        // A 4xx with a body (the API's own), a 200, a partial head.
        assert!(rewrite_parse_error(b"HTTP/1.1 404 Not Found\r\ncontent-length: 40\r\n\r\n").is_none());
        assert!(rewrite_parse_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(rewrite_parse_error(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n").is_none());
        assert!(rewrite_parse_error(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}").is_none());
    }
}
