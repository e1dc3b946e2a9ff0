//! Injected disk faults: a seam through which tests make the log's file operations fail the
//! way a failing disk does (EIO from a write or an fsync, ENOSPC), to check that the writer
//! recovers by itself once the fault passes. Production leaves it unset.

use std::sync::atomic::{AtomicU32, Ordering};

/// How many of the next operations of each kind fail, and with which error.
#[derive(Debug, Default)]
pub struct Faults {
    /// `write`s of a commit.
    pub write: AtomicU32,
    /// `fsync`s and `fdatasync`s: of a commit, of a new segment, of the `next-segment` file.
    pub sync: AtomicU32,
    /// Cutting a failed segment back to its synced length.
    pub truncate: AtomicU32,
    /// The OS error injected (EIO when 0).
    pub errno: AtomicU32,
}

impl Faults {
    /// Fails the next `n` operations that `which` picks.
    pub fn fail_next(&self, which: impl Fn(&Faults) -> &AtomicU32, n: u32) {
        which(self).store(n, Ordering::SeqCst);
    }

    /// An injected error when `faults` says the operation `which` picks must fail now.
    pub(crate) fn check(
        faults: Option<&Faults>,
        which: impl Fn(&Faults) -> &AtomicU32,
    ) -> std::io::Result<()> {
        let Some(f) = faults else { return Ok(()) };
        let left = which(f);
        let hit = left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !hit {
            return Ok(());
        }
        let errno = match f.errno.load(Ordering::SeqCst) {
            0 => libc::EIO,
            e => e as i32,
        };
        Err(std::io::Error::from_raw_os_error(errno))
    }
}
