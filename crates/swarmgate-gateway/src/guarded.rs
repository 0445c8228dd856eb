//! A response body that holds a guard (a request's concurrency slots)
//! exactly as long as the response lasts: it is dropped when the body ends,
//! fails, or is dropped because the client went away.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

pub struct Guarded<B, G> {
    inner: B,
    guard: Option<G>,
}

impl<B, G> Guarded<B, G> {
    pub fn new(inner: B, guard: G) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B, G> Body for Guarded<B, G>
where
    B: Body + Unpin,
    G: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.guard = None;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    use super::*;

    struct Count(Arc<AtomicUsize>);
    impl Drop for Count {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_guard_goes_when_the_body_ends_or_is_dropped() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut body = Guarded::new(Full::new(Bytes::from_static(b"x")), Count(dropped.clone()));
        assert!(body.frame().await.is_some());
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        assert!(body.frame().await.is_none());
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        drop(body);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);

        let body = Guarded::new(Full::new(Bytes::from_static(b"x")), Count(dropped.clone()));
        drop(body);
        assert_eq!(dropped.load(Ordering::SeqCst), 2);
    }
}
