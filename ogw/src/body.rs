//! Keeping HTTP/1 connections in step with the client when a request's body is not
//! read.
//!
//! A request may be answered before its body is read (a refusal, a missing bucket). If
//! the connection then stayed open, the server and the client could disagree on where
//! the next request starts: botocore sends PUTs with `Expect: 100-continue` and, when
//! the answer is a refusal rather than `100 Continue`, never sends the body but reuses
//! the connection; hyper, on keep-alive, drains the announced body from whatever
//! arrives next, so the first bytes of the client's next request were taken as the
//! body and the rest parsed as a request of its own (`ET / HTTP/1.1` for a
//! `GET /`), answered with SignatureDoesNotMatch (issue 22). So a response to a request
//! whose body was not read to its end says `Connection: close`, and the connection
//! ends with it: neither side reads past the response.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// A request body that records whether it was read to its end, and fails when the
/// client leaves it idle for longer than the idle timeout while it is being read.
pub struct Tracked<B> {
    inner: B,
    done: Arc<AtomicBool>,
    idle: Duration,
    /// Made when the body first waits for the client.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B: Body + Unpin> Tracked<B> {
    /// The body, and the flag that says it was read to its end (set at once for a body
    /// that is empty).
    pub fn new(inner: B, idle: Duration) -> (Tracked<B>, Arc<AtomicBool>) {
        let done = Arc::new(AtomicBool::new(inner.is_end_stream()));
        (Tracked { inner, done: done.clone(), idle, timer: None }, done)
    }
}

/// A body's failure: the connection's, or the client's silence.
#[derive(Debug, thiserror::Error)]
pub enum BodyError<E> {
    #[error(transparent)]
    Read(E),
    #[error("the client sent no body bytes for {0:?}")]
    Idle(Duration),
}

impl<B> Body for Tracked<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = BodyError<B::Error>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError<B::Error>>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Pending => {
                let idle = self.idle;
                let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(BodyError::Idle(self.idle))));
                }
                return Poll::Pending;
            }
            Poll::Ready(None) => self.done.store(true, Ordering::Release),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.done.store(true, Ordering::Release),
            _ => {}
        }
        let deadline = tokio::time::Instant::now() + self.idle;
        if let Some(t) = self.timer.as_mut() {
            t.as_mut().reset(deadline);
        }
        r.map(|o| o.map(|f| f.map_err(BodyError::Read)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Marks `resp` to close its connection when the request's body was not read to its
/// end (HTTP/1 only: HTTP/2 frames each stream's body and has no such header).
pub fn close_if_unread<T>(version: http::Version, done: &AtomicBool, resp: &mut http::Response<T>) {
    if version <= http::Version::HTTP_11 && !done.load(Ordering::Acquire) {
        resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};

    use super::*;

    #[tokio::test]
    async fn a_body_read_to_its_end_is_marked_done() {
        let (mut b, done) = Tracked::new(Full::new(Bytes::from_static(b"abc")), Duration::from_secs(5));
        assert!(!done.load(Ordering::Acquire), "nothing read yet");
        let frame = b.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"abc"));
        assert!(done.load(Ordering::Acquire), "the last frame ends the body");
        let mut resp = http::Response::new(());
        close_if_unread(http::Version::HTTP_11, &done, &mut resp);
        assert!(resp.headers().get("connection").is_none());
    }

    #[test]
    fn an_unread_body_closes_the_connection_on_http1_only() {
        let (_b, done) = Tracked::new(Full::new(Bytes::from_static(b"x")), Duration::from_secs(5));
        let mut resp = http::Response::new(());
        close_if_unread(http::Version::HTTP_2, &done, &mut resp);
        assert!(resp.headers().get("connection").is_none());
        close_if_unread(http::Version::HTTP_11, &done, &mut resp);
        assert_eq!(resp.headers()["connection"], "close");
        let (_b, done) = Tracked::new(Full::new(Bytes::new()), Duration::from_secs(5));
        assert!(done.load(Ordering::Acquire), "an empty body needs no reading");
    }
}
