//! Huge pages for the CPU kernels' large buffers and tables.
//!
//! A gather reads random rows: with 4 KiB pages each row of a table past the TLB's reach (a
//! few MB) costs a page walk, which at V = 1M made a 4096-id lookup 1.7x slower than at
//! V = 32k on an AMD EPYC. Fresh buffers are advised at allocation ([`advise`]); a table,
//! allocated by whoever made the tensor, is collapsed into 2 MiB pages once it has served a
//! few lookups at the same address ([`note_table`]).

use std::sync::Mutex;

/// Below this size a buffer is not worth a huge-page request.
const HUGE_PAGE_MIN_BYTES: usize = 8 << 20;

/// A zeroed buffer of `len` floats that the caller writes in full. A large one is backed by
/// huge pages where the kernel allows it: a fresh buffer of tens of MB (the [U, D] rows of a
/// bag step at V = 1M) otherwise takes one page fault per 4 KiB on first touch, half of that
/// step's time (`docs/measurements.md`).
pub fn output_buffer(len: usize) -> Vec<f32> {
    // A large vec![0.0; n] is a fresh zeroed mapping, not yet touched: advice still applies.
    let values = vec![0.0f32; len];
    advise(values.as_ptr().cast(), len * size_of::<f32>());
    values
}

/// Asks for huge pages under `bytes` bytes from `start`, when there are enough of them.
pub fn advise(start: *const u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    if bytes >= HUGE_PAGE_MIN_BYTES {
        madvise_huge_pages(start, bytes, libc::MADV_HUGEPAGE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, bytes);
}

/// `madvise(advice)` on the whole 2 MiB pages inside `bytes` bytes from `start`.
#[cfg(target_os = "linux")]
fn madvise_huge_pages(start: *const u8, bytes: usize, advice: libc::c_int) {
    const HUGE_PAGE: usize = 2 << 20;
    let first = (start as usize).next_multiple_of(HUGE_PAGE);
    let end = (start as usize + bytes) / HUGE_PAGE * HUGE_PAGE;
    if end > first {
        // SAFETY: the range lies inside the caller's allocation. MADV_HUGEPAGE and
        // MADV_COLLAPSE change how its pages are backed, never their contents (a collapse
        // copies them under the kernel's own locks, safe beside concurrent reads and writes);
        // a kernel that cannot returns an error and leaves the memory as it was.
        unsafe { libc::madvise(first as *mut libc::c_void, end - first, advice) };
    }
}

/// Tables smaller than this sit within the TLB's reach with 4 KiB pages.
const COLLAPSE_MIN_BYTES: usize = 64 << 20;

/// Lookups of a table at one address before its pages are collapsed: a table that lives
/// across steps is collapsed once, one replaced every step (a dense optimizer's) never.
const COLLAPSE_AFTER: u32 = 8;

/// The large tables seen lately: start address, length in bytes and lookups so far.
static TABLES: Mutex<Vec<(usize, usize, u32)>> = Mutex::new(Vec::new());

/// How many tables [`TABLES`] remembers (the least recently added goes first).
const TABLES_KEPT: usize = 16;

/// Counts a lookup of `table`; at its [`COLLAPSE_AFTER`]-th at the same address, a large
/// table's pages are collapsed into huge pages (`MADV_COLLAPSE`, Linux 6.1 and later: one copy
/// of the table, once). Where the kernel cannot, the pages stay as they are.
pub fn note_table(table: &[f32]) {
    let bytes = std::mem::size_of_val(table);
    if bytes < COLLAPSE_MIN_BYTES {
        return;
    }
    let start = table.as_ptr() as usize;
    let mut tables = TABLES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let count = match tables.iter_mut().find(|t| t.0 == start && t.1 == bytes) {
        Some(entry) => {
            entry.2 = entry.2.saturating_add(1);
            entry.2
        }
        None => {
            if tables.len() == TABLES_KEPT {
                tables.remove(0);
            }
            tables.push((start, bytes, 1));
            1
        }
    };
    drop(tables);
    if count == COLLAPSE_AFTER {
        collapse(table.as_ptr().cast(), bytes);
    }
}

/// `MADV_COLLAPSE` (not in every libc's headers).
#[cfg(target_os = "linux")]
const MADV_COLLAPSE: libc::c_int = 25;

fn collapse(start: *const u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    madvise_huge_pages(start, bytes, MADV_COLLAPSE);
    #[cfg(not(target_os = "linux"))]
    let _ = (start, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large table looked up past the collapse count keeps its values, and is counted once
    /// per lookup at its address.
    #[test]
    fn a_collapsed_table_keeps_its_values() {
        let len = COLLAPSE_MIN_BYTES / size_of::<f32>() + 3;
        let table: Vec<f32> = (0..len).map(|i| (i % 1000) as f32 * 0.5).collect();
        for _ in 0..=COLLAPSE_AFTER {
            note_table(&table);
        }
        let start = table.as_ptr() as usize;
        let tables = TABLES.lock().unwrap();
        let seen = tables.iter().find(|t| t.0 == start).map(|t| t.2);
        assert_eq!(seen, Some(COLLAPSE_AFTER + 1));
        drop(tables);
        assert!(
            table
                .iter()
                .enumerate()
                .all(|(i, &x)| x == (i % 1000) as f32 * 0.5)
        );
        // Small tables are not tracked.
        let small = vec![0.0f32; 1024];
        note_table(&small);
        let start = small.as_ptr() as usize;
        assert!(TABLES.lock().unwrap().iter().all(|t| t.0 != start));
    }
}
