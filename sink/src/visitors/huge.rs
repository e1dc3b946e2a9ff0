//! Large tables in anonymous memory the kernel is asked to back with huge pages (2 MiB): a
//! lookup that hops through tens of megabytes (a GeoIP tree walk, the click cache's random
//! slot) then misses the TLB far less often. Where transparent huge pages are off the advice
//! is refused and small pages serve; the memory is still mapped lazily, page by page.

use std::marker::PhantomData;

/// Huge pages are 2 MiB on the machines this runs on.
const HUGE_PAGE: usize = 2 << 20;

/// `len` zeroed `T`s in a private anonymous mapping advised for huge pages.
pub struct HugeSlice<T> {
    /// The mapping (for `munmap`); the slice starts at the first 2 MiB boundary in it.
    map: *mut libc::c_void,
    map_len: usize,
    ptr: *mut T,
    len: usize,
    _owns: PhantomData<T>,
}

// SAFETY: a `HugeSlice<T>` owns its `T`s as a `Box<[T]>` would.
unsafe impl<T: Send> Send for HugeSlice<T> {}
// SAFETY: as above; shared access only gives out `&[T]`.
unsafe impl<T: Sync> Sync for HugeSlice<T> {}

impl<T> HugeSlice<T> {
    /// `len` `T`s of zero bytes.
    ///
    /// # Safety
    /// All-zero bytes must be a valid `T`.
    pub unsafe fn zeroed(len: usize) -> std::io::Result<Self> {
        let bytes = std::mem::size_of::<T>()
            .checked_mul(len)
            .ok_or_else(|| std::io::Error::other("too large"))?;
        assert!(std::mem::align_of::<T>() <= HUGE_PAGE);
        let map_len = bytes.div_ceil(HUGE_PAGE).max(1) * HUGE_PAGE + HUGE_PAGE;
        // SAFETY: a fresh private anonymous mapping; the arguments are valid.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let start = (map as usize).div_ceil(HUGE_PAGE) * HUGE_PAGE;
        // SAFETY: the advised range lies inside the mapping. A refusal (no transparent huge
        // pages) leaves small pages, which is fine.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                map_len - (start - map as usize),
                libc::MADV_HUGEPAGE,
            );
        }
        Ok(HugeSlice {
            map,
            map_len,
            ptr: start as *mut T,
            len,
            _owns: PhantomData,
        })
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: `ptr..ptr + len` is inside the live mapping, zero-initialised (valid per
        // `zeroed`'s contract) or written since, and borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T> std::ops::Deref for HugeSlice<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: as in `as_mut_slice`, borrowed shared through `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T> AsRef<[T]> for HugeSlice<T> {
    fn as_ref(&self) -> &[T] {
        self
    }
}

impl<T> Drop for HugeSlice<T> {
    fn drop(&mut self) {
        // SAFETY: every `T` is dropped in place first (none need it for the tables this
        // holds, but the type promises it), then the mapping made in `zeroed` is unmapped.
        unsafe {
            std::ptr::drop_in_place(self.as_mut_slice());
            libc::munmap(self.map, self.map_len);
        }
    }
}

impl<T> std::fmt::Debug for HugeSlice<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HugeSlice({} items)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn zeroed_slices_are_aligned_writable_and_freed() {
        // SAFETY: all-zero bytes are a valid u8 and AtomicU64.
        let mut bytes = unsafe { HugeSlice::<u8>::zeroed(5 << 20) }.unwrap();
        assert_eq!(bytes.len(), 5 << 20);
        assert_eq!(bytes.as_ptr() as usize % HUGE_PAGE, 0);
        assert!(bytes.iter().step_by(4096).all(|&b| b == 0));
        bytes.as_mut_slice()[12345] = 7;
        assert_eq!(bytes[12345], 7);
        let atomics = unsafe { HugeSlice::<AtomicU64>::zeroed(1000) }.unwrap();
        atomics[999].store(3, Ordering::Relaxed);
        assert_eq!(atomics[999].load(Ordering::Relaxed), 3);
        let empty = unsafe { HugeSlice::<u8>::zeroed(0) }.unwrap();
        assert!(empty.is_empty());
    }
}
