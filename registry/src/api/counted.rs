//! Bodies that count the bytes they carry, so `/metrics` reports what moved: a chunked
//! upload (docker, skopeo) or a streamed response announces no `Content-Length`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};

use crate::metrics::Metrics;

/// Where a [`Counted`] body adds its bytes.
enum Sink {
    /// A request body: the middleware reads the total once the handler is done.
    Total(Arc<AtomicU64>),
    /// A response body: added to `/metrics` as each piece goes out, before the client can
    /// have it.
    Sent(Arc<Metrics>, &'static str),
}

/// A body passed through unchanged, its data bytes counted.
struct Counted {
    inner: Body,
    sink: Sink,
}

/// `body`, counting into `total`.
pub fn request(body: Body, total: Arc<AtomicU64>) -> Body {
    Body::new(Counted { inner: body, sink: Sink::Total(total) })
}

/// `body`, counting into `route`'s bytes sent.
pub fn response(body: Body, metrics: Arc<Metrics>, route: &'static str) -> Body {
    Body::new(Counted { inner: body, sink: Sink::Sent(metrics, route) })
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(n) = frame.data_ref().map(|d| d.len() as u64).filter(|n| *n > 0) {
                match &this.sink {
                    Sink::Total(total) => {
                        total.fetch_add(n, Ordering::Relaxed);
                    }
                    Sink::Sent(metrics, route) => metrics.add_sent(route, n),
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
