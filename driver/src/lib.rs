//! Which monoio I/O driver a thread runs on. The edge's workers and the load generator's
//! threads both take `auto`, `io_uring` or `legacy` (epoll), resolve it against this kernel
//! (`auto` probes for io_uring, which containers and old kernels may refuse) and build their
//! runtime on the answer, so both say the same thing about where they run.

use std::fmt;
use std::future::Future;
use std::str::FromStr;

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

/// The configured choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// io_uring where the kernel allows it, else the legacy (epoll) driver.
    Auto,
    IoUring,
    Legacy,
}

impl FromStr for Choice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Choice::Auto),
            "io_uring" | "iouring" | "uring" => Ok(Choice::IoUring),
            "legacy" | "epoll" => Ok(Choice::Legacy),
            _ => Err(format!("{s:?}: expected auto, io_uring or legacy")),
        }
    }
}

impl Choice {
    /// The driver this choice gives here, and why it is not io_uring when it is not.
    pub fn resolve(self) -> (Driver, Option<&'static str>) {
        match self {
            Choice::Legacy => (Driver::Legacy, Some("configured")),
            Choice::IoUring => (Driver::IoUring, None),
            Choice::Auto if monoio::utils::detect_uring() => (Driver::IoUring, None),
            Choice::Auto => (Driver::Legacy, Some("io_uring is unavailable here")),
        }
    }
}

/// A resolved driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Legacy,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Legacy => "legacy",
        }
    }

    /// Runs `fut` to completion on a new runtime on this thread, with a submission queue of
    /// `entries` (io_uring) and timers enabled. Fails when the runtime cannot be built (an
    /// io_uring the kernel refuses, a locked-memory limit).
    pub fn block_on<F: Future>(self, entries: u32, fut: F) -> std::io::Result<F::Output> {
        Ok(match self {
            Driver::IoUring => RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(entries)
                .enable_timer()
                .build()?
                .block_on(fut),
            Driver::Legacy => RuntimeBuilder::<LegacyDriver>::new()
                .with_entries(entries)
                .enable_timer()
                .build()?
                .block_on(fut),
        })
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_unknown_ones_are_named() {
        assert_eq!("auto".parse(), Ok(Choice::Auto));
        assert_eq!("uring".parse(), Ok(Choice::IoUring));
        assert_eq!("epoll".parse(), Ok(Choice::Legacy));
        let e = "kqueue".parse::<Choice>().unwrap_err();
        assert!(e.contains("kqueue") && e.contains("legacy"), "{e}");
    }

    #[test]
    fn every_resolved_driver_runs_a_future() {
        assert_eq!(
            Choice::Legacy.resolve(),
            (Driver::Legacy, Some("configured"))
        );
        // `auto` gives whichever this kernel has, and that one must run.
        let (d, _) = Choice::Auto.resolve();
        assert_eq!(d.block_on(8, async { 7 }).unwrap(), 7);
        assert_eq!(Driver::Legacy.block_on(8, async { 8 }).unwrap(), 8);
    }
}
