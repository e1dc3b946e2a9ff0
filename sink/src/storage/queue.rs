//! The queue between a worker and the WAL writer: a bounded channel of events, bounded in
//! bytes as well as in count. A count alone lets a few thousand large events (long heads,
//! form bodies) pin hundreds of megabytes while the disk is slow; the byte bound makes what
//! a worker can have in flight a fixed amount of memory whatever the events hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::TryRecvError;

use crate::model::event::Event;

/// Bytes of queued events, shared by the two ends of one queue.
#[derive(Debug, Default)]
struct Bytes(AtomicU64);

/// The worker's end.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: crossbeam_channel::Sender<Event>,
    bytes: Arc<Bytes>,
    max_bytes: u64,
}

/// The WAL writer's end.
#[derive(Debug, Clone)]
pub struct EventReceiver {
    rx: crossbeam_channel::Receiver<Event>,
    bytes: Arc<Bytes>,
}

/// A queue of at most `events` events and `max_bytes` bytes of them (an event larger than
/// `max_bytes` is still taken when the queue is empty, so no event is too large to queue).
pub fn queue(events: usize, max_bytes: u64) -> (EventSender, EventReceiver) {
    let (tx, rx) = crossbeam_channel::bounded(events);
    let bytes = Arc::new(Bytes::default());
    (
        EventSender {
            tx,
            bytes: Arc::clone(&bytes),
            max_bytes,
        },
        EventReceiver { rx, bytes },
    )
}

/// Why an event was not queued (it is dropped: an ack it carried resolves as not durable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds its limit of events or bytes.
    Full,
    /// The writer is gone.
    Closed,
}

impl EventSender {
    /// Queues `event` without waiting.
    pub fn try_send(&self, event: Event) -> Result<(), Refused> {
        let size = event.heap_bytes() as u64;
        let before = self.bytes.0.fetch_add(size, Ordering::Relaxed);
        if before > 0 && before + size > self.max_bytes {
            self.bytes.0.fetch_sub(size, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        self.tx.try_send(event).map_err(|e| {
            self.bytes.0.fetch_sub(size, Ordering::Relaxed);
            match e {
                crossbeam_channel::TrySendError::Full(_) => Refused::Full,
                crossbeam_channel::TrySendError::Disconnected(_) => Refused::Closed,
            }
        })
    }
}

impl EventReceiver {
    /// Takes the next event without waiting.
    pub fn try_recv(&self) -> Result<Event, TryRecvError> {
        let e = self.rx.try_recv()?;
        self.bytes
            .0
            .fetch_sub(e.heap_bytes() as u64, Ordering::Relaxed);
        Ok(e)
    }

    /// Events queued now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Bytes of the events queued now.
    pub fn bytes(&self) -> u64 {
        self.bytes.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventId, EventKind};
    use std::net::{IpAddr, Ipv4Addr};

    fn event(bytes: usize) -> Event {
        let mut e = Event::new(
            EventKind::Visit,
            EventId::new(1, 1, 0, 1),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &[],
            0,
        );
        e.push(crate::Field::Target, &vec![b'x'; bytes]);
        e
    }

    #[test]
    fn bounded_in_bytes_and_in_count() {
        let (tx, rx) = queue(100, 10_000);
        for _ in 0..3 {
            tx.try_send(event(3_000)).unwrap();
        }
        assert!(matches!(tx.try_send(event(3_000)), Err(Refused::Full)));
        assert_eq!(rx.len(), 3);
        assert!(rx.bytes() >= 9_000);
        rx.try_recv().unwrap();
        tx.try_send(event(3_000)).unwrap();
        while rx.try_recv().is_ok() {}
        assert_eq!(rx.bytes(), 0);
        // An event larger than the whole bound still goes into an empty queue.
        tx.try_send(event(50_000)).unwrap();
        assert!(matches!(tx.try_send(event(1)), Err(Refused::Full)));
        rx.try_recv().unwrap();

        let (tx, rx) = queue(2, u64::MAX);
        tx.try_send(event(1)).unwrap();
        tx.try_send(event(1)).unwrap();
        assert!(matches!(tx.try_send(event(1)), Err(Refused::Full)));
        drop(rx);
        assert!(matches!(tx.try_send(event(1)), Err(Refused::Closed)));
    }
}
