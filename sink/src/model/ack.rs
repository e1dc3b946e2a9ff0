//! "This event is durable": the one-shot signal from the WAL writer thread back to the edge
//! worker that must not answer a postback before it. Lock-free: an atomic state and an
//! atomic waker, so the worker awaits it without blocking its thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

const PENDING: u8 = 0;
const DURABLE: u8 = 1;
const FAILED: u8 = 2;

#[derive(Debug, Default)]
struct Inner {
    state: AtomicU8,
    waker: AtomicWaker,
}

/// The writer's half, carried by the event. Dropping it without [`AckSender::complete`]
/// (the event was lost on the way) resolves the receiver as not durable.
#[derive(Debug)]
pub struct AckSender(Option<Arc<Inner>>);

/// The worker's half: a future resolving to `true` once the event is durable, `false` if
/// it could not be made durable.
#[derive(Debug)]
pub struct AckReceiver(Arc<Inner>);

/// A connected sender and receiver.
pub fn pair() -> (AckSender, AckReceiver) {
    let inner = Arc::new(Inner::default());
    (AckSender(Some(Arc::clone(&inner))), AckReceiver(inner))
}

impl AckSender {
    /// Reports the outcome and wakes the receiver.
    pub fn complete(mut self, durable: bool) {
        if let Some(inner) = self.0.take() {
            finish(&inner, durable);
        }
    }
}

fn finish(inner: &Inner, durable: bool) {
    inner
        .state
        .store(if durable { DURABLE } else { FAILED }, Ordering::Release);
    inner.waker.wake();
}

impl Drop for AckSender {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            finish(&inner, false);
        }
    }
}

impl AckReceiver {
    /// The outcome, if it is known yet.
    pub fn outcome(&self) -> Option<bool> {
        match self.0.state.load(Ordering::Acquire) {
            PENDING => None,
            s => Some(s == DURABLE),
        }
    }
}

impl Future for AckReceiver {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        if let Some(done) = self.outcome() {
            return Poll::Ready(done);
        }
        self.0.waker.register(cx.waker());
        // The writer may have finished between the first look and the registration.
        match self.outcome() {
            Some(done) => Poll::Ready(done),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::task::{Wake, Waker};
    use std::thread::Thread;

    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Polls `fut` to completion on this thread, parking between polls.
    pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }

    #[test]
    fn completes_across_threads() {
        let (tx, rx) = pair();
        assert_eq!(rx.outcome(), None);
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            tx.complete(true);
        });
        assert!(block_on(rx));
        t.join().unwrap();
    }

    #[test]
    fn failure_and_drop_mean_not_durable() {
        let (tx, rx) = pair();
        tx.complete(false);
        assert!(!block_on(rx));
        let (tx, rx) = pair();
        drop(tx);
        assert_eq!(rx.outcome(), Some(false));
    }
}
