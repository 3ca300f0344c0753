//! Which of a log's mapped pages stay in this process's resident set.
//!
//! Reads go through each segment's map, and a read faults its page into the process; nothing else
//! maps log pages (appends `pwrite`, recovery releases what it scanned). Left alone, every page
//! ever read would stay mapped until its segment is deleted: a 5 M-message drain kept 1.36 GB
//! resident.
//!
//! # The release rule
//!
//! The caller (the broker's topic) names a *release line*: the slowest reader's position (the
//! lowest channel cursor, or the tail when no channel reads), or a fixed spread (128 MiB, the
//! broker's choice) behind the fastest reader if that is further on. [`Log::release_below`]
//! and [`Log::release_spread`] release the pages below it: every page of a segment wholly
//! below the line, and in the segment holding the line the pages below it rounded down to
//! `segment::RELEASE_STEP` (4 MiB), never past what was written to the file. What stays
//! mapped is the pages readers are working on: less than one step behind the slowest reader,
//! and whatever lies between the slowest and the fastest, at most the spread. A reader behind
//! the spread (a channel that stalled and resumed) faults released pages back in as it reads,
//! and [`Log::sweep_behind`] releases those behind it, in steps, without moving the line.
//!
//! Pages can be released before anyone reads them (a topic without channels has the tail as
//! its line; recovery releases what it scanned), so "released" is not "unmapped": a read below
//! a segment's released part is noted, and releasing up to the line covers those pages again.
//!
//! Releasing is `MADV_DONTNEED` on a shared file mapping: it drops page-table entries only.
//! The bytes stay in the page cache (and on disk), so a message still pending, in flight or
//! deferred below the line is read back correctly; its read faults the page in again and is
//! noted, and is released again when the line next crosses a step, or by
//! [`Log::sweep_below`] (the broker's periodic maintenance step) for segments the line left.
//!
//! Cost: [`Log::release_below`] is a binary search and a few compares when the line did not
//! cross a step (the broker calls it after each delivery pass that moved a cursor, never per
//! message); one or two `madvise` calls per 4 MiB read otherwise.

use super::Log;
use crate::storage::segment::{Segment, RELEASE_STEP, SEGMENT_HEADER_LEN};

impl Log {
    /// Releases this process's mapped pages of the records below `offset` (the reader line;
    /// see the module docs). Returns the bytes released (0 when nothing crossed a step).
    pub fn release_below(&mut self, offset: u64) -> usize {
        let offset = offset.min(self.tail);
        let Some(last) = self.segment_for(offset) else {
            return 0;
        };
        // A lost record's position is unknown: release nothing in its segment this time.
        let pos = line_position(&self.segments[last], offset).unwrap_or(0);
        self.release_at(last, pos)
    }

    /// Releases the pages of segment `last` below byte `pos` (in steps), and every segment
    /// before it.
    fn release_at(&mut self, last: usize, pos: usize) -> usize {
        // Segments wholly below the line, newest first, down to the first clean one: a reader
        // leaves its pages in the segments it just passed. (A page read back in an older one,
        // a requeue from far behind, waits for the periodic sweep.)
        let mut n = 0;
        for seg in self.segments[..last].iter_mut().rev() {
            if seg.is_clean() {
                break;
            }
            n += seg.release_all();
        }
        n + self.segments[last].release_below(pos)
    }

    /// Releases the pages more than `spread` bytes of records behind `fastest` (the fastest
    /// reader's position), even those a slower reader has yet to read: it faults them back in
    /// when it gets there, and [`Log::sweep_behind`] releases them again behind it. Bounds what
    /// a stalled reader (a channel without consumers, a paused one) keeps mapped while others
    /// read on: without it every page read after the stall stays mapped.
    pub fn release_spread(&mut self, fastest: u64, spread: usize) -> usize {
        let fastest = fastest.min(self.tail);
        let Some(mut i) = self.segment_for(fastest) else {
            return 0;
        };
        let Some(mut pos) = line_position(&self.segments[i], fastest) else {
            return 0;
        };
        let mut lag = spread;
        loop {
            let here = pos.saturating_sub(SEGMENT_HEADER_LEN);
            if here >= lag {
                break;
            }
            lag -= here;
            let Some(prev) = i.checked_sub(1) else {
                return 0; // the whole log is within the spread
            };
            i = prev;
            pos = self.segments[i].used();
        }
        self.release_at(i, pos - lag)
    }

    /// Releases again the pages read back below the released part behind a reader at `offset`
    /// (a reader slower than the release line re-reads released pages), in steps, without
    /// moving the release line: the pages ahead of slower readers stay mapped.
    pub fn sweep_behind(&mut self, offset: u64) -> usize {
        let offset = offset.min(self.tail);
        let Some(last) = self.segment_for(offset) else {
            return 0;
        };
        let Some(pos) = line_position(&self.segments[last], offset) else {
            return 0;
        };
        let mut n = self.segments[last].sweep(pos & !(RELEASE_STEP - 1));
        for seg in self.segments[..last].iter_mut().rev() {
            if !seg.has_refaults() {
                break;
            }
            n += seg.sweep(usize::MAX);
        }
        n
    }

    /// [`Log::release_below`], and also releases again the pages that reads faulted back in
    /// below `offset` in every older segment (requeues and deferrals from far behind, peeks,
    /// carries). Visits every segment: for the periodic maintenance step, not the hot path.
    pub fn sweep_below(&mut self, offset: u64) -> usize {
        let mut n = self.release_below(offset);
        let Some(last) = self.segment_for(offset.min(self.tail)) else {
            return n;
        };
        for seg in &mut self.segments[..last] {
            n += seg.release_all();
        }
        n
    }
}

/// The byte position of the reader line `offset` in `seg`, the segment that would hold it:
/// the record's position, or the segment's end when the line is past its records (the tail,
/// or a gap). `None` for a record recovery lost (its position is unknown: release nothing in
/// this segment this time).
fn line_position(seg: &Segment, offset: u64) -> Option<usize> {
    if offset >= seg.end() {
        return Some(seg.used());
    }
    seg.position(offset)
}

#[cfg(test)]
mod tests {
    use crate::storage::segment::RELEASE_STEP;
    use crate::storage::testutil::TempDir;
    use crate::storage::{Log, LogConfig, NewRecord};

    const MIB: usize = 1024 * 1024;
    const BODY: usize = 4000;

    fn body_for(offset: u64) -> Vec<u8> {
        (0..BODY).map(|i| (offset as usize * 7 + i) as u8).collect()
    }

    /// A log of 16 MiB segments holding `mib` MiB of 4000-byte records, each read once (as a
    /// delivery pass does), so every written page has been mapped.
    fn written_and_read(tmp: &TempDir, mib: usize) -> Log {
        let cfg = LogConfig {
            max_bytes_per_file: 16 * MIB as u64,
            ..LogConfig::default()
        };
        let mut log = Log::open(tmp.path(), cfg).unwrap();
        while log.bytes_from(0) < (mib * MIB) as u64 {
            let off = log.tail();
            log.append(&NewRecord::message(1, 0, &body_for(off)))
                .unwrap();
            log.run_jobs_inline(0);
        }
        log.flush().unwrap();
        for off in 0..log.tail() {
            assert_eq!(log.read(off).unwrap().body, &body_for(off)[..]);
        }
        log
    }

    fn resident(log: &Log) -> Vec<u64> {
        log.segments.iter().map(|s| s.resident_bytes()).collect()
    }

    #[test]
    fn pages_behind_the_reader_line_leave_the_resident_set_and_stay_readable() {
        let tmp = TempDir::new("release");
        let mut log = written_and_read(&tmp, 56);
        assert!(log.segment_count() >= 4, "{}", log.segment_count());
        let before = resident(&log);
        assert!(
            before.iter().all(|&r| r >= 8 * MIB as u64),
            "reads mapped the pages: {before:?}"
        );
        // The line in the middle of the third segment: the first two go, the third keeps what
        // lies past the line's 4 MiB step, the ones after it are untouched.
        let line = log.segments[2].base + (log.segments[2].end() - log.segments[2].base) / 2;
        let released = log.release_below(line);
        assert!(released >= 2 * 16 * MIB - RELEASE_STEP, "{released}");
        let after = resident(&log);
        assert_eq!(&after[..2], &[0, 0], "{after:?}");
        assert!(
            after[2] > 0 && after[2] <= before[2] - RELEASE_STEP as u64,
            "{after:?}"
        );
        assert_eq!(&after[3..], &before[3..]);
        // Nothing crossed a new step: a second call releases nothing.
        assert_eq!(log.release_below(line), 0);
        // Every record still reads back right (released pages fault back in from the cache).
        for off in 0..log.tail() {
            assert_eq!(log.read(off).unwrap().body, &body_for(off)[..], "{off}");
        }
        assert!(resident(&log)[0] > 0, "the reads mapped the pages again");
        // The sweep releases the refaulted pages below the line, and only those.
        let kept = resident(&log)[3];
        assert!(log.sweep_below(line) >= 2 * 16 * MIB - RELEASE_STEP);
        let swept = resident(&log);
        assert_eq!(&swept[..2], &[0, 0], "{swept:?}");
        assert_eq!(swept[3], kept);
        assert_eq!(log.sweep_below(line), 0, "nothing refaulted since");
    }

    #[test]
    fn the_tail_as_line_releases_everything_written_and_appends_go_on() {
        let tmp = TempDir::new("release-tail");
        let mut log = written_and_read(&tmp, 20);
        let tail = log.tail();
        log.release_below(tail);
        let after = resident(&log);
        let n = after.len();
        assert!(after[..n - 1].iter().all(|&r| r == 0), "{after:?}");
        assert!(after[n - 1] < RELEASE_STEP as u64, "{after:?}");
        // The active segment keeps taking appends, and the new records read back.
        for _ in 0..100 {
            let off = log.tail();
            log.append(&NewRecord::message(1, 0, &body_for(off)))
                .unwrap();
        }
        log.flush().unwrap();
        for off in tail - 10..log.tail() {
            assert_eq!(log.read(off).unwrap().body, &body_for(off)[..], "{off}");
        }
    }

    #[test]
    fn pages_released_before_they_were_read_are_released_again_once_the_reader_passes() {
        let tmp = TempDir::new("release-early");
        let mut log = written_and_read(&tmp, 56);
        // A topic without channels: the tail is the line, everything written goes.
        let tail = log.tail();
        log.release_below(tail);
        assert!(resident(&log).iter().all(|&r| r < RELEASE_STEP as u64));
        // A first channel then reads from the start: every read is below `released`.
        let line = log.segments[2].base + (log.segments[2].end() - log.segments[2].base) / 2;
        for off in 0..line {
            assert_eq!(log.read(off).unwrap().body, &body_for(off)[..]);
        }
        assert!(resident(&log)[0] >= 8 * MIB as u64, "{:?}", resident(&log));
        // Its pass ends with the line in the third segment: what it read behind is released.
        assert!(log.release_below(line) >= 2 * 16 * MIB);
        let after = resident(&log);
        assert_eq!(&after[..2], &[0, 0], "{after:?}");
        assert!(after[2] <= (RELEASE_STEP + 2 * MIB) as u64, "{after:?}");
        assert_eq!(log.release_below(line), 0, "nothing new to release");
    }

    #[test]
    fn a_stalled_reader_keeps_at_most_the_spread_mapped_and_its_rereads_are_released() {
        let tmp = TempDir::new("release-spread");
        // Every page read once (the fast reader); a stalled reader sits at offset 0.
        let mut log = written_and_read(&tmp, 56);
        let (tail, spread) = (log.tail(), 20 * MIB);
        assert_eq!(
            log.release_below(0),
            0,
            "the stalled reader holds everything"
        );
        assert!(log.release_spread(tail, spread) >= 56 * MIB - spread - 2 * RELEASE_STEP);
        let kept: u64 = resident(&log).iter().sum();
        assert!(
            kept <= (spread + RELEASE_STEP) as u64 && kept >= (spread / 2) as u64,
            "{kept}"
        );
        // The stalled reader moves on through the first segment: what it reads behind itself
        // is released in steps, nothing ahead of it is.
        let seg0_end = log.segments[1].base;
        for off in 0..seg0_end {
            assert_eq!(log.read(off).unwrap().body, &body_for(off)[..]);
        }
        assert!(resident(&log)[0] >= 8 * MIB as u64);
        let ahead = resident(&log)[1..].to_vec();
        let behind = log.sweep_behind(seg0_end - 1);
        assert!(behind >= 8 * MIB, "{behind}");
        let after = resident(&log);
        assert!(after[0] <= (RELEASE_STEP + 2 * MIB) as u64, "{after:?}");
        assert_eq!(
            after[1..],
            ahead[..],
            "pages ahead of the reader stay mapped"
        );
        assert!(
            ahead.iter().sum::<u64>() > 0,
            "the fast reader's recent pages"
        );
        // Passing the segment's end releases the rest of it.
        log.sweep_behind(seg0_end);
        assert_eq!(resident(&log)[0], 0);
    }

    #[test]
    fn recovery_releases_the_pages_it_scanned() {
        let tmp = TempDir::new("release-recovery");
        let tail = {
            let log = written_and_read(&tmp, 40);
            log.tail()
        };
        let log = Log::open(
            tmp.path(),
            LogConfig {
                max_bytes_per_file: 16 * MIB as u64,
                ..LogConfig::default()
            },
        )
        .unwrap();
        assert_eq!(log.tail(), tail);
        let after = resident(&log);
        assert!(after.iter().all(|&r| r == 0), "{after:?}");
        assert_eq!(log.read(tail - 1).unwrap().body, &body_for(tail - 1)[..]);
    }
}
