//! The interim consumer: counts the events it receives, by kind, and drops them.
//!
//! It stands where the write-ahead log and Parquet writer will stand, so the edge's
//! channel, back-pressure and metrics are real; nothing is stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};

use crate::event::{Event, EventKind};

/// Events consumed so far, by [`EventKind`] (index = `kind as usize`).
#[derive(Debug, Default)]
pub struct ConsumedCounts([AtomicU64; EventKind::ALL.len()]);

impl ConsumedCounts {
    pub fn get(&self, kind: EventKind) -> u64 {
        self.0[kind as usize].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        EventKind::ALL.iter().map(|&k| self.get(k)).sum()
    }
}

/// A running discard consumer.
pub struct Discard {
    pub counts: Arc<ConsumedCounts>,
    thread: JoinHandle<()>,
}

impl Discard {
    /// Starts the consumer thread over the workers' channels; it ends when every sender is
    /// dropped and every channel is empty.
    pub fn spawn(rxs: Vec<Receiver<Event>>) -> std::io::Result<Self> {
        let counts = Arc::new(ConsumedCounts::default());
        let c = Arc::clone(&counts);
        let thread = std::thread::Builder::new()
            .name("sink-discard".into())
            .spawn(move || {
                poll_channels(rxs, |event| {
                    let slot = &c.0[event.kind as usize];
                    slot.store(slot.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                })
            })?;
        Ok(Discard { counts, thread })
    }

    /// Waits for the consumer to drain the channel and stop.
    pub fn join(self) -> Arc<ConsumedCounts> {
        // The loop above cannot panic; a failed join would only repeat a panic already logged.
        let _ = self.thread.join();
        self.counts
    }
}

/// Longest nap between polls of idle channels.
const MAX_NAP: Duration = Duration::from_millis(8);

/// Takes events from every channel until all are disconnected and empty.
///
/// The consumer polls and naps instead of blocking in `recv`: a blocked receiver makes every
/// `send` wake it with a futex call, and the workers must not make system calls per request.
pub fn poll_channels(mut rxs: Vec<Receiver<Event>>, mut take: impl FnMut(Event)) {
    let mut nap = Duration::from_micros(250);
    while !rxs.is_empty() {
        let mut got = false;
        rxs.retain(|rx| {
            loop {
                match rx.try_recv() {
                    Ok(event) => {
                        got = true;
                        take(event);
                    }
                    Err(TryRecvError::Empty) => break true,
                    Err(TryRecvError::Disconnected) => break false,
                }
            }
        });
        if got {
            nap = Duration::from_micros(250);
        } else {
            std::thread::sleep(nap);
            nap = (nap * 2).min(MAX_NAP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::EventId;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn counts_by_kind_and_stops_when_senders_are_gone() {
        let (tx1, rx1) = crossbeam_channel::bounded(8);
        let (tx2, rx2) = crossbeam_channel::bounded(8);
        let d = Discard::spawn(vec![rx1, rx2]).unwrap();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for kind in [EventKind::Visit, EventKind::Visit, EventKind::Postback] {
            tx1.send(Event::new(kind, EventId::default(), ip, b"", 0))
                .unwrap();
        }
        drop(tx1);
        std::thread::sleep(Duration::from_millis(20));
        tx2.send(Event::new(EventKind::Visit, EventId::default(), ip, b"", 0))
            .unwrap();
        drop(tx2);
        let counts = d.join();
        assert_eq!(counts.get(EventKind::Visit), 3);
        assert_eq!(counts.get(EventKind::Postback), 1);
        assert_eq!(counts.get(EventKind::Pixel), 0);
        assert_eq!(counts.total(), 4);
    }
}
