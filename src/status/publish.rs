//! `POST /publish/` on the master's HTTP listener (DESIGN.md §8): Pushpin's EPCP endpoint, so
//! GRIP publishers and `fastpm publish` reach the held requests. This module owns the HTTP
//! side only — the body read with a cap and a deadline, the answer — and hands the body to a
//! [`Publisher`] the master provides (the holder parses the EPCP JSON and publishes). Without a
//! publisher the route answers 404, as for any path this listener does not serve.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes};

/// Largest publish request body read. An EPCP message body may be 1 MiB (DESIGN.md §8); as
/// base64 inside JSON it grows by a third, plus the envelope. Over it: 400 without reading on.
pub const MAX_PUBLISH_BODY: usize = 2 << 20;

/// The whole body must arrive within this long (the header read has its own timeout), so a
/// silent publisher cannot keep a connection slot of the listener.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the master plugs in to publish: takes the raw EPCP JSON body, answers what to send
/// back (200 with the items published, 400 with a one-line reason, 503 while the broker is
/// down…). The future is the publisher's own; the listener awaits it on its connection task.
pub trait Publisher: Send + Sync + 'static {
    fn publish(&self, body: Bytes) -> Pin<Box<dyn Future<Output = PublishOutcome> + Send>>;
}

/// The answer to one publish request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishOutcome {
    /// HTTP status code (an invalid one is sent as 500).
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl PublishOutcome {
    /// A text/plain answer; `body` should end with a newline.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain;charset=UTF-8",
            body: body.into(),
        }
    }
}

/// Why a body was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Over the cap (declared by Content-Length, or seen while reading).
    TooLarge,
    /// The client stopped sending before the deadline.
    TimedOut,
    /// The connection failed or the framing was broken.
    Read(String),
}

/// Read a whole body of at most `cap` bytes within `deadline`. A declared length over the cap
/// is refused before a byte is read; an undeclared one (chunked) as soon as it passes the cap.
pub async fn read_capped<B>(body: B, cap: usize, deadline: Duration) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if body.size_hint().lower() > cap as u64 {
        return Err(BodyError::TooLarge);
    }
    tokio::time::timeout(deadline, collect_capped(body, cap))
        .await
        .map_err(|_| BodyError::TimedOut)?
}

async fn collect_capped<B>(mut body: B, cap: usize) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > cap {
                return Err(BodyError::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(out))
}

/// Answer one `POST /publish/`: 404 without a publisher, 400/408 for a body not taken,
/// otherwise what the publisher says.
pub async fn answer<B>(body: B, publisher: Option<Arc<dyn Publisher>>) -> PublishOutcome
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let Some(publisher) = publisher else {
        return PublishOutcome::text(404, "publishing is not enabled on this listener\n");
    };
    match read_capped(body, MAX_PUBLISH_BODY, BODY_READ_TIMEOUT).await {
        Ok(bytes) => publisher.publish(bytes).await,
        Err(BodyError::TooLarge) => {
            PublishOutcome::text(400, format!("body over {} MiB\n", MAX_PUBLISH_BODY >> 20))
        }
        Err(BodyError::TimedOut) => PublishOutcome::text(
            408,
            format!(
                "body not received within {} s\n",
                BODY_READ_TIMEOUT.as_secs()
            ),
        ),
        Err(BodyError::Read(why)) => {
            PublishOutcome::text(400, format!("cannot read the body: {why}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::task::{Context, Poll};

    use http_body_util::Full;
    use hyper::body::Frame;

    /// A body of separate frames with no declared length (like a chunked request); `stall`
    /// keeps it pending after the last frame instead of ending.
    struct Frames {
        frames: VecDeque<Bytes>,
        stall: bool,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.frames.pop_front() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None if self.stall => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn frames(sizes: &[usize], stall: bool) -> Frames {
        Frames {
            frames: sizes.iter().map(|&n| Bytes::from(vec![b'x'; n])).collect(),
            stall,
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn bodies_up_to_the_cap_are_read_whole() {
        let got = read_capped(Full::new(Bytes::from_static(b"hello")), 5, SECOND).await;
        assert_eq!(got, Ok(Bytes::from_static(b"hello")));
        let got = read_capped(frames(&[3, 0, 4], false), 7, SECOND).await;
        assert_eq!(got.map(|b| b.len()), Ok(7));
        let got = read_capped(frames(&[], false), 0, SECOND).await;
        assert_eq!(got, Ok(Bytes::new()));
    }

    #[tokio::test]
    async fn over_the_cap_is_refused_declared_or_not() {
        // Declared (Full has an exact size hint): refused before reading.
        let got = read_capped(Full::new(Bytes::from_static(b"hello!")), 5, SECOND).await;
        assert_eq!(got, Err(BodyError::TooLarge));
        // Undeclared: refused at the frame that passes the cap, even if more would follow
        // (the stalled end is never awaited).
        let got = read_capped(frames(&[4, 4], true), 7, SECOND).await;
        assert_eq!(got, Err(BodyError::TooLarge));
    }

    #[tokio::test]
    async fn a_body_that_stops_coming_times_out() {
        let got = read_capped(frames(&[3], true), 10, Duration::from_millis(50)).await;
        assert_eq!(got, Err(BodyError::TimedOut));
    }

    #[tokio::test]
    async fn no_publisher_is_404_and_a_large_body_400() {
        let none = answer(Full::new(Bytes::from_static(b"{}")), None).await;
        assert_eq!(none.status, 404);
        struct Never;
        impl Publisher for Never {
            fn publish(&self, _: Bytes) -> Pin<Box<dyn Future<Output = PublishOutcome> + Send>> {
                panic!("a refused body must not reach the publisher")
            }
        }
        let big = Full::new(Bytes::from(vec![b' '; MAX_PUBLISH_BODY + 1]));
        let refused = answer(big, Some(Arc::new(Never))).await;
        assert_eq!(refused, PublishOutcome::text(400, "body over 2 MiB\n"));
    }
}
