//! Fuzz target: the WAL reader on hostile segments. The bytes are read as a segment file,
//! and every record it yields is decoded as an event: nothing may panic. Bytes that are not
//! a segment (no `CTWAL` in front) are also taken as up to 16 `(offset u16 LE, xor u8)`
//! changes to a valid segment: whatever the damage, every record read back is one of the
//! segment's own, in order (none invented).

use std::path::{Path, PathBuf};

use clicktracker_fuzz::{segment, wal_records};
use sink::storage::wal::read_segment;
use sink::{Event, Field};

fn main() {
    // Memory-backed when there is one: every run writes a file or two.
    let tmp = Path::new("/dev/shm");
    let tmp = if tmp.is_dir() {
        tmp.to_owned()
    } else {
        std::env::temp_dir()
    };
    let dir = tmp.join(format!("clicktracker-fuzz-wal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let originals = wal_records();
    let valid = segment(&dir.join("valid"), &originals);
    let path: PathBuf = dir.join("input.wal");
    let mut damaged = Vec::with_capacity(valid.len());
    afl::fuzz!(|data: &[u8]| {
        std::fs::write(&path, data).expect("write the input");
        if let Ok(c) = read_segment(&path) {
            for r in c.records() {
                let _ = Event::peek(r);
                if let Ok(e) = Event::decode(r) {
                    let _ = (e.get(Field::Target), e.remapped().count());
                }
            }
        }

        if data.starts_with(b"CTWAL") {
            return;
        }
        damaged.clear();
        damaged.extend_from_slice(&valid);
        for m in data.chunks_exact(3).take(16) {
            let at = usize::from(u16::from_le_bytes([m[0], m[1]])) % damaged.len();
            damaged[at] ^= m[2];
        }
        std::fs::write(&path, &damaged).expect("write the damaged segment");
        let Ok(c) = read_segment(&path) else { return };
        let mut want = originals.iter();
        for r in c.records() {
            assert!(
                want.any(|w| w == r),
                "a record that was never written: {:?}",
                &r[..r.len().min(64)]
            );
        }
        if damaged == valid {
            assert_eq!(
                (c.len(), c.torn_bytes, c.damage.len()),
                (originals.len(), 0, 0)
            );
        }
    });
    // Replaying one input (not under afl-fuzz, which kills the process) ends here.
    let _ = std::fs::remove_dir_all(&dir);
}
