//! One connection's life within the [`Limits`]: the TLS handshake, the request-head and
//! keep-alive timers ([`Clock`]), and the per-read and per-write idle timers ([`Stall`]) on
//! request bodies ([`IdleBody`]) and on the socket's writes ([`TimedIo`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::Limits;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every connection of one `serve` shares.
pub(super) struct Shared {
    /// hyper's HTTP/1 and HTTP/2 connection builder.
    pub(super) builder: Builder<TokioExecutor>,
    /// The registry's routes.
    pub(super) router: Router,
    /// The timeouts.
    pub(super) limits: Limits,
    /// Set when serving TLS.
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serves one accepted connection until it ends, times out or `stop` asks it to finish;
/// `_permit` is its slot under the connection cap, given back when this returns.
pub(super) async fn handle(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let limits = shared.limits;
    let clock = Arc::new(Clock::new(&limits));
    let io = TimedIo { inner: stream, clock: clock.clone(), stall: Stall::new(limits.body_idle_timeout) };
    let Some(acceptor) = &shared.tls else {
        return serve_io(&shared, TokioIo::new(io), clock, stop, peer).await;
    };
    match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(io)).await {
        Ok(Ok(tls)) => {
            clock.handshake_done(tls.get_ref().1.alpn_protocol() == Some(b"h2"));
            serve_io(&shared, TokioIo::new(tls), clock, stop, peer).await;
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
    }
}

/// Runs hyper on `io` and drops the connection when its [`Clock`] runs out.
async fn serve_io<I>(shared: &Shared, io: I, clock: Arc<Clock>, mut stop: watch::Receiver<bool>, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let router = shared.router.clone();
    let body_idle = shared.limits.body_idle_timeout;
    let tracker = clock.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let request = InFlight::start(tracker.clone());
        let call = router.clone().oneshot(req.map(|body| IdleBody { inner: body, stall: Stall::new(body_idle) }));
        async move {
            let response = call.await?;
            Ok::<_, Infallible>(response.map(|inner| Tracked { inner, _request: request }))
        }
    });
    let conn = shared.builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            why = clock.expired() => {
                // No request is in progress: dropping the connection loses nothing.
                tracing::debug!(%peer, "closing the connection: {why}");
                return;
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When a connection with no request in progress must close. It waits for a request head
/// (`header_read_timeout`, counted from the connection's start, or from the first byte after
/// an idle spell) or idles between requests (`keep_alive_timeout`, counted from the end of
/// the last response). A request in progress, or a response write the client has not taken
/// yet, stops the clock: the per-read and per-write [`Stall`] timers guard those.
struct Clock {
    state: Mutex<ClockState>,
    changed: Notify,
    writing: AtomicBool,
    header_read: Duration,
    keep_alive: Duration,
}

struct ClockState {
    in_flight: usize,
    phase: Phase,
    since: Instant,
    /// HTTP/2 frames between requests (pings, window updates) do not start a request head.
    h2: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Idle,
}

impl Clock {
    fn new(limits: &Limits) -> Clock {
        Clock {
            state: Mutex::new(ClockState { in_flight: 0, phase: Phase::Head, since: Instant::now(), h2: false }),
            changed: Notify::new(),
            writing: AtomicBool::new(false),
            header_read: limits.header_read_timeout,
            keep_alive: limits.keep_alive_timeout,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first request head is due `header_read_timeout` after the handshake.
    fn handshake_done(&self, h2: bool) {
        let mut s = self.state();
        s.since = Instant::now();
        s.h2 = h2;
    }

    /// Bytes arrived: on an idle HTTP/1 connection they start the next request head.
    fn on_read(&self) {
        let mut s = self.state();
        if s.in_flight == 0 && s.phase == Phase::Idle && !s.h2 {
            s.phase = Phase::Head;
            s.since = Instant::now();
            drop(s);
            self.changed.notify_waiters();
        }
    }

    /// A response write had to wait (`true`) or went through after waiting (`false`).
    fn on_write_wait(&self, waiting: bool) {
        self.writing.store(waiting, Ordering::SeqCst);
        if !waiting {
            let mut s = self.state();
            if s.in_flight == 0 && s.phase == Phase::Idle {
                s.since = Instant::now();
            }
            drop(s);
            self.changed.notify_waiters();
        }
    }

    fn request_started(&self) {
        self.state().in_flight += 1;
    }

    fn request_ended(&self) {
        let mut s = self.state();
        s.in_flight -= 1;
        if s.in_flight == 0 {
            s.phase = Phase::Idle;
            s.since = Instant::now();
        }
        drop(s);
        self.changed.notify_waiters();
    }

    /// When the connection must close if nothing changes, and why; `None` while it is busy.
    fn deadline(&self) -> Option<(Instant, &'static str)> {
        if self.writing.load(Ordering::SeqCst) {
            return None;
        }
        let s = self.state();
        if s.in_flight > 0 {
            return None;
        }
        Some(match s.phase {
            Phase::Head => (s.since + self.header_read, "no complete request head in time"),
            Phase::Idle => (s.since + self.keep_alive, "idle keep-alive timed out"),
        })
    }

    /// Resolves, with the reason, once the current deadline passes.
    async fn expired(&self) -> &'static str {
        loop {
            // Created before reading the state, so a change made after the read wakes it.
            let changed = self.changed.notified();
            match self.deadline() {
                Some((at, why)) => tokio::select! {
                    () = tokio::time::sleep_until(at) => {
                        if self.deadline().is_some_and(|(now_at, _)| now_at <= Instant::now()) {
                            return why;
                        }
                    }
                    () = changed => {}
                },
                None => changed.await,
            }
        }
    }
}

/// One request from the moment hyper hands it over until its response body is done (or
/// dropped): while any exists, the connection's [`Clock`] stands still.
struct InFlight(Arc<Clock>);

impl InFlight {
    fn start(clock: Arc<Clock>) -> InFlight {
        clock.request_started();
        InFlight(clock)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that keeps its request [`InFlight`] until hyper has taken all of it.
struct Tracked<B> {
    inner: B,
    _request: InFlight,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An idle timer for one direction of a transfer: it starts when an operation first has to
/// wait and is cleared by any progress, so it bounds each wait, not the whole transfer.
struct Stall {
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl Stall {
    fn new(limit: Duration) -> Stall {
        Stall { limit, timer: None, waiting: false }
    }

    /// The operation made progress; returns whether it had been waiting.
    fn progress(&mut self) -> bool {
        std::mem::replace(&mut self.waiting, false)
    }

    /// The operation is pending: whether it has now waited `limit` without progress.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.waiting {
            self.waiting = true;
            let deadline = Instant::now() + self.limit;
            match &mut self.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        self.timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready())
    }

    fn error(&self, what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, format!("{what} for {:?}", self.limit))
    }
}

/// A request body whose next piece must come within `body_idle_timeout`; a slow body that
/// keeps moving is never cut.
struct IdleBody {
    inner: Incoming,
    stall: Stall,
}

impl Body for IdleBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.stall.progress();
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Poll::Pending if this.stall.timed_out(cx) => {
                Poll::Ready(Some(Err(this.stall.error("the request body sent nothing").into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The TCP stream, telling the [`Clock`] about incoming bytes and failing a write (or flush)
/// the client has not taken for `body_idle_timeout`.
struct TimedIo {
    inner: TcpStream,
    clock: Arc<Clock>,
    stall: Stall,
}

impl TimedIo {
    fn write_step<T>(&mut self, cx: &mut Context<'_>, step: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match step {
            Poll::Ready(r) => {
                if self.stall.progress() {
                    self.clock.on_write_wait(false);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if !self.stall.waiting {
                    self.clock.on_write_wait(true);
                }
                if self.stall.timed_out(cx) {
                    return Poll::Ready(Err(self.stall.error("the client took no response data")));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.on_read();
        }
        read
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let step = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.write_step(cx, step)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let step = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.write_step(cx, step)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let step = Pin::new(&mut this.inner).poll_flush(cx);
        this.write_step(cx, step)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let step = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.write_step(cx, step)
    }
}
