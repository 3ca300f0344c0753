//! A hierarchical hashed timing wheel over `u64` millisecond ticks (Varghese & Lauck, 1987).
//!
//! It owns every pending deadline in corq: DPUB deferrals, REQ delays, in-flight timeouts,
//! heartbeats and flushes. It never reads the clock (time is the `now_ms` argument of
//! [`Wheel::poll`]) and never calls back into the broker: expired payloads are handed back in a
//! `Vec`, and the caller decides what they mean.
//!
//! # Levels
//!
//! The wheel has [`NUM_LEVELS`] = 5 levels of [`SLOTS`] = 256 slots (`LEVEL_BITS` = 8 bits of
//! the deadline each). A slot on level `L` covers `256^L` ms, so a whole level covers
//! `256^(L+1)` ms:
//!
//! | level | one slot covers     | whole level covers        | bits of the deadline used as slot |
//! |-------|---------------------|---------------------------|-----------------------------------|
//! | 0     | 1 ms                | 256 ms                    | 0..8                              |
//! | 1     | 256 ms              | 65.536 s                  | 8..16                             |
//! | 2     | 65.536 s            | 16 777 s (4.66 h)         | 16..24                            |
//! | 3     | 4.66 h              | 2^32 ms (49.7 days)       | 24..32                            |
//! | 4     | 49.7 days           | 2^40 ms (34.8 years)      | 32..40                            |
//! | overflow list | -           | everything further away   | -                                 |
//!
//! One hour (nsqd's `--max-req-timeout`) lands on level 2. Deadlines 2^40 ms (34.8 years) or
//! more past the wheel's epoch go to an unsorted overflow list that is re-examined when the
//! wheel's time reaches the epoch of the earliest of them, so any `u64` deadline fires
//! correctly.
//!
//! The width is one constant, `LEVEL_BITS`; the number of levels follows from it (enough for
//! at least 2^36 ms before the overflow list). 6, 8 and 12 bits (6, 5 and 3 levels) were
//! measured at 1 M pending timers over an hour: a timer cascades 3, 2 and 1 times before it
//! fires, and expiry cost ~84, ~76 and ~67 ns per timer in one session. 12 bits was fastest
//! at 1 M but costs insert ~3 ns there and more at 10 k, adds a fixed ~390 KiB (77 bytes per
//! timer at 10 k pending) and lost its expiry gain at 10 M (entries cascaded into level 0 up
//! to 4 s early are cold again when they fire). 8 bits keeps insert and cancel as they were,
//! adds ~36 KiB, takes expiry from ~89 to ~79 ns at 1 M and from ~132 to ~99 ns at 10 M.
//! See `docs/bench-timer.md`.
//!
//! # Slot math
//!
//! `elapsed` is the wheel's time: every entry with `deadline <= elapsed` has been handed out
//! (or sits on the *ready* list, see below). An entry with `deadline > elapsed` is filed by the
//! highest bit in which the two differ (tokio's `level_for`):
//!
//! ```text
//! level = msb((elapsed ^ deadline) | 255) / 8          (>= 5 means the overflow list)
//! slot  = (deadline >> (8 * level)) % 256
//! ```
//!
//! # Invariants
//!
//! * An entry on level `L` shares every bit above `8 * (L + 1)` with `elapsed`, and its
//!   level-`L` slot is *strictly after* `elapsed`'s. So on each level all occupied slots lie
//!   ahead of the current position: the first occupied slot of the level is the next slot due,
//!   and the slot's start time is `(elapsed with the low 8 * (L + 1) bits cleared) +
//!   slot * 256^L`, which is always `> elapsed`.
//! * Each level's occupied slots are a two-level bitmap: 4 `u64` words (one bit per slot) and
//!   a summary word with bit `w` set iff word `w` is non-zero. The first occupied slot is
//!   `64 * tz(summary) + tz(words[tz(summary)])`: two `trailing_zeros`, no scan, for any width
//!   up to 4096 slots.
//! * Every slot on level `L` starts later than every entry on levels below `L` (those all lie in
//!   `elapsed`'s own level-`L` slot). So the next slot due is the first occupied slot of the
//!   *lowest* non-empty level: finding it costs at most 5 × 2 `trailing_zeros`.
//! * A deadline at or before `elapsed` (inserted "in the past") goes on the ready list and
//!   fires on the next poll.
//!
//! # Cascading
//!
//! [`Wheel::poll`]`(now)` repeatedly takes the next slot due while its start is `<= now`, moves
//! `elapsed` to that start and empties the slot: entries with `deadline <= now` are handed out;
//! the rest are refiled with the new `elapsed`, which puts them on a strictly lower level
//! (their level-`L` bits now equal `elapsed`'s). Finally `elapsed = now`. Empty time costs
//! nothing: a jump of 10 hours touches only the occupied slots in between, never each tick.
//! With deadlines up to an hour away a timer cascades at most twice (level 2 → 1 → 0) before
//! it fires, three times when it crosses a 4.66 h boundary.
//!
//! A slot is emptied in batches of 32 keys: a first pass only loads each key's entry (the
//! loads are independent, so their cache misses overlap), a second pass fires or refiles the
//! batch from cache. Without `unsafe` there is no prefetch instruction; this gets the same
//! overlap in safe code (together with the dense counters below, cascading at 1 M pending went
//! from ~90 to ~60 ns per timer with 64-slot levels, before wider levels took it to ~48 ns).
//!
//! `poll` also keeps `next_due`, a lower bound on the next slot start: exact after each poll,
//! lowered by every filing, left alone by `cancel`. A poll before it with an empty ready list
//! only moves `elapsed` (moving `elapsed` short of every slot start changes no entry's level
//! or slot), so the empty polls of a busy reactor cost O(1) rather than a bitmap scan.
//!
//! # Slot lists and lazy removal
//!
//! Each slot (and the ready and overflow lists) is an append-only `Vec<u32>` of slab keys, and
//! each entry records its list (its home, one byte, and the list's number, two bytes) and its
//! index in it.
//! Lists are numbered `level × 256 + slot`, then the overflow list (1 280) and the ready list
//! (1 281), and their live and total key counts sit in one dense array (1 282 × 8 bytes =
//! 10 KiB, L1-resident), apart from the key vectors. Removal (`cancel`, and
//! `reschedule` to a different slot) only detaches the entry and decrements the list's live
//! count, leaving its key as a *tombstone*: `cancel` touches the entry (one slab access, the
//! only likely cache miss) and the counter, and the key vector only when the list empties or
//! is compacted. A key is live in a list iff its entry still exists, names that list and
//! records that index; since lists only grow at the end, an entry's live occurrence is its last.
//! Tombstones are skipped when the slot is drained, dropped wholesale when a list's last live
//! key leaves, and compacted away once a list holds more than `2 × live + 16` keys, so they
//! never take more than about twice the live keys' space.
//!
//! Why not tokio's intrusive doubly linked list (`prev`/`next` slab keys)? Measured at 1 M
//! pending timers, a cascade that chases `next` pointers takes one dependent cache miss per
//! entry and expiry cost ~280 ns/timer; walking a vector of keys lets the CPU overlap those
//! misses (~100 ns/timer), and lazy removal saves cancel the two extra misses on its
//! neighbours. See `docs/bench-timer.md`.
//!
//! Measured and rejected: moving each key's position out of the entry into a dense per-key
//! array (8 bytes a key) and storing the deadline's low bits next to the key, so that a cascade
//! never touches the slab. Cascading got cheaper (~60 → ~42 ns per timer at 1 M), but the
//! final firing then found the entry cold (a cascade no longer warms it), cancel had a second
//! random line to write, and expiry as a whole got slower (~90 → ~145 ns), cancel too (~60 →
//! ~95 ns).
//!
//! # Complexity
//!
//! * `insert`: O(1). An XOR, a `leading_zeros`, and a push onto the slot's vector.
//! * `cancel`, `reschedule`: O(1) amortised. Detach (a tombstone, a counter), plus for
//!   `reschedule` a push; compaction is O(len) but only after `len / 2` removals paid for it.
//! * `next_deadline`: O(levels), at most 5 two-level bitmap lookups (10 `trailing_zeros`).
//! * `poll`: O(levels) per slot visited plus O(1) per key handed out, refiled or skipped. An
//!   entry moves down at most 4 times in its life (it only ever moves to a lower level), and an
//!   overflow entry is revisited once per 2^40 ms epoch, so expiry is amortised O(1) per timer.
//! * Memory: one slab entry per pending timer (payload, deadline, generation, a `u32` index, a
//!   one-byte home and a two-byte list number: 23 bytes + payload, rounded to alignment, so
//!   32 bytes with a `u64` payload) plus 4 bytes per key in a slot vector (up to ~2× that with
//!   tombstones and `Vec` growth), plus a fixed ~40 KiB: 10 KiB of counters, 1 282 `Vec`
//!   headers (30 KiB) and 200 bytes of bitmaps. At 1 M pending that is 39.2 bytes per timer in
//!   all, payload included (39.1 with 64-slot levels). No allocation per insert once the slab
//!   and the slot vectors have grown: drained vectors keep their buffers.
//!
//! # Worked example
//!
//! `elapsed = 1 000`, and a message goes in flight with a 60 s timeout: `deadline = 61 000`.
//!
//! 1. `1 000 ^ 61 000 = 60 832`, whose highest bit is 15, so the level is `15 / 8 = 1`, and
//!    the slot is `(61 000 >> 8) % 256 = 238`. `next_deadline()` says `238 × 256 = 60 928`: a
//!    cascade point, earlier than the deadline, which is allowed.
//! 2. `poll(60 928)` reaches that slot: `elapsed = 60 928`, the entry is not due, and
//!    `60 928 ^ 61 000 = 72` (bit 6) refiles it on level 0, slot `61 000 % 256 = 72`, which
//!    starts at `60 928 + 72 = 61 000`: exactly the deadline.
//! 3. `poll(61 000)` hands the payload out: on time to the millisecond, after one cascade
//!    (with 64-slot levels it took two: level 2 → 1 → 0). A TOUCH in between would have been
//!    a `reschedule`: detach (O(1)) and refile from the current `elapsed`.
//!
//! # Stale handles
//!
//! A [`TimerId`] is a slab key plus a generation drawn from a wheel-wide `u64` counter. A slot
//! reused by a later timer carries a different generation, so an old id (fired, cancelled) can
//! never touch someone else's timer.

use slab::Slab;
use std::fmt;

/// Bits of the deadline each level consumes (6..=12): a level has `2^LEVEL_BITS` slots.
const LEVEL_BITS: u32 = 8;
/// Slots per level.
pub(crate) const SLOTS: usize = 1 << LEVEL_BITS;
/// Number of levels: enough to cover at least 2^36 ms (2.2 years) before the overflow list.
pub(crate) const NUM_LEVELS: usize = 36usize.div_ceil(LEVEL_BITS as usize);
/// `u64` words in one level's occupied bitmap (4 for 256 slots; see [`Occupied`]).
const WORDS: usize = SLOTS / 64;
// A bitmap word is whole, a list number fits the entry's `u16` (checked below), and the
// `Home` enum has a variant for every level.
const _: () = assert!(LEVEL_BITS >= 6 && LEVEL_BITS <= 12 && NUM_LEVELS <= 6);
/// How much time the levels cover: deadlines this far ahead of the current epoch overflow.
const WHEEL_SPAN: u64 = 1 << (LEVEL_BITS as usize * NUM_LEVELS);
/// Slab keys and list positions are stored as `u32` to keep entries small, so the wheel holds
/// fewer than `MAX_TIMERS` timers: a list holds at most `2 * live + COMPACT_SLACK` keys, and
/// every position must stay below `DETACHED`. About 2.1 billion, i.e. 64 GiB of entries.
const MAX_TIMERS: usize = (u32::MAX as usize - COMPACT_SLACK) / 2;
/// `Entry::pos` of an entry that is in no list (between leaving one list and `link`, or removal).
const DETACHED: u32 = u32::MAX;
/// A list is compacted once its key vector exceeds `2 * live + COMPACT_SLACK` keys, so
/// tombstones never take more than about twice the live keys' space.
const COMPACT_SLACK: usize = 16;
/// Lists are numbered `level * SLOTS + slot` for the levels, then the overflow list
/// ([`OVERFLOW`]) and the ready list ([`READY`]): see [`list_index`].
const NUM_LISTS: usize = NUM_LEVELS * SLOTS + 2;
/// Keys `fire_list` reads ahead: their entries are loaded in a tight first pass, so the cache
/// misses overlap, before a second pass fires or refiles them from cache.
const FIRE_BATCH: usize = 32;

/// A handle to a pending timer: a slab key plus a generation, so a stale handle is harmless.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    /// Index of the entry in the wheel's slab.
    key: u32,
    /// Must match the entry's generation; differs once the timer fired or was cancelled and
    /// the slot was reused.
    gen: u64,
}

/// Which list an entry is linked into; `Entry::slot` gives the slot within a level.
///
/// A fieldless enum (rather than a `u8`) gives the compiler a niche, so `Slab`'s internal
/// vacant/occupied enum costs no extra tag word.
///
/// There is a variant for up to 6 levels (`LEVEL_BITS = 6`); with 8-bit levels `L5` is
/// unused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Home {
    L0 = 0,
    L1 = 1,
    L2 = 2,
    L3 = 3,
    L4 = 4,
    L5 = 5,
    /// Beyond the top level's range.
    Overflow = 6,
    /// Deadline already passed when filed: fires on the next poll.
    Ready = 7,
}

impl Home {
    /// The home for wheel level `level` (< NUM_LEVELS).
    #[inline]
    fn level(level: usize) -> Home {
        match level {
            0 => Home::L0,
            1 => Home::L1,
            2 => Home::L2,
            3 => Home::L3,
            4 => Home::L4,
            5 => Home::L5,
            _ => unreachable!("level {level} >= NUM_LEVELS"),
        }
    }
}

/// The list number of `home`/`slot` (see [`NUM_LISTS`]): plain arithmetic (a `min`, no
/// branch). The overflow list is filed with slot 0 and the ready list with slot 1, so both
/// land right after the last level.
#[inline]
fn list_index(home: Home, slot: u16) -> usize {
    (home as usize).min(NUM_LEVELS) * SLOTS + slot as usize
}

/// The overflow list's number.
const OVERFLOW: usize = NUM_LEVELS * SLOTS;
const _: () = assert!(NUM_LISTS <= 1 << 16, "list numbers are stored as u16");
/// The ready list's number.
const READY: usize = OVERFLOW + 1;
/// The slot the overflow list is filed with (see [`list_index`]).
const OVERFLOW_SLOT: u16 = 0;
/// The slot the ready list is filed with (see [`list_index`]).
const READY_SLOT: u16 = 1;

/// Which slots of one level are occupied: a two-level bitmap, so finding the first occupied
/// slot costs two `trailing_zeros` however wide the level (up to 4096 slots: 64 words).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Occupied {
    /// Bit `w` is set iff `words[w] != 0`.
    summary: u64,
    /// Bit `s % 64` of `words[s / 64]` is set iff slot `s` is non-empty.
    words: [u64; WORDS],
}

impl Occupied {
    const EMPTY: Occupied = Occupied {
        summary: 0,
        words: [0; WORDS],
    };

    #[inline]
    fn set(&mut self, slot: usize) {
        self.words[slot / 64] |= 1 << (slot % 64);
        self.summary |= 1 << (slot / 64);
    }

    #[inline]
    fn clear(&mut self, slot: usize) {
        let word = &mut self.words[slot / 64];
        *word &= !(1 << (slot % 64));
        if *word == 0 {
            self.summary &= !(1 << (slot / 64));
        }
    }

    /// Whether slot `slot` is marked occupied (for the tests' invariant checks).
    #[cfg(test)]
    fn contains(&self, slot: usize) -> bool {
        self.words[slot / 64] >> (slot % 64) & 1 == 1
    }

    /// The lowest occupied slot.
    #[inline]
    fn first(&self) -> Option<usize> {
        if self.summary == 0 {
            return None;
        }
        let w = self.summary.trailing_zeros() as usize;
        Some(w * 64 + self.words[w].trailing_zeros() as usize)
    }
}

/// One pending timer, stored in the slab.
struct Entry<T> {
    /// The caller's value, handed back by `poll` or `cancel`.
    payload: T,
    /// When it fires (ms); decides the level and slot.
    deadline: u64,
    /// Copy of the owning `TimerId`'s generation, to reject stale ids.
    gen: u64,
    /// Index of this entry's key in its list's vector (`DETACHED` when in none): tells the
    /// live occurrence of the key from its tombstones.
    pos: u32,
    /// The kind of list this entry is linked into (a level, overflow or ready). Also gives
    /// the entry a niche, so the slab's vacant/occupied enum needs no tag word.
    home: Home,
    /// The number of that list ([`list_index`]). Stored rather than recomputed from the home
    /// and slot (or the deadline) so `cancel` finds the list's counters with one load: measured
    /// ~4 ns cheaper per random cancel at 1 M than computing `min(home, levels) * 256 + slot`.
    list: u16,
}

impl<T> Entry<T> {
    /// The number of the list this entry is filed in.
    fn list(&self) -> usize {
        self.list as usize
    }
}

/// The counters of one list, kept in a dense array apart from the key vectors: all 1 282
/// take 10 KiB and stay in L1, so `cancel` touches its entry and nothing else that can miss.
///
/// Removal is lazy: `cancel` and `reschedule` leave the key behind as a *tombstone* and only
/// decrement `live`. A key at index `i` of a list is live iff its entry still exists and
/// records this list and `pos == i`; appends only ever go to the end, so an entry's live
/// occurrence is always its last one in the list.
///
/// # Invariants
///
/// `len` is the length of the list's key vector and `live` counts its live keys; `live == 0`
/// implies `len == 0` (the list is reset when its last live key leaves), so a level's
/// `occupied` bit is set iff the slot has a live entry.
#[derive(Copy, Clone, Default)]
struct Count {
    /// How many keys are live.
    live: u32,
    /// How many keys the vector holds, live ones and tombstones.
    len: u32,
}

/// The next slot `poll` will visit.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Expiration {
    /// When the slot starts: `poll(now)` visits it once `now >= deadline`.
    deadline: u64,
    /// The list number: a level slot or [`OVERFLOW`].
    list: usize,
}

/// A hierarchical hashed timing wheel: see the module documentation.
pub struct Wheel<T> {
    /// Owns the entries; list links are keys into it.
    entries: Slab<Entry<T>>,
    /// The keys filed in each list, indexed by list number (see [`NUM_LISTS`]). Vectors rather
    /// than intrusive lists so a cascade reads keys sequentially and the CPU can overlap the
    /// cache misses on their entries (see the module doc); drained vectors keep their buffers.
    keys: Vec<Vec<u32>>,
    /// Live and total key counts per list, indexed like `keys`.
    counts: Box<[Count; NUM_LISTS]>,
    /// Slot `s` of `occupied[l]` is set iff slot `s` of level `l` is non-empty: finds the next
    /// slot without scanning empty ones.
    occupied: [Occupied; NUM_LEVELS],
    /// Lower bound on the overflow list's deadlines (not raised on cancel), `u64::MAX` if it
    /// was empty when last scanned. Lets a huge jump skip straight to the right epoch.
    overflow_min: u64,
    /// Lower bound on the ready list's deadlines, for `next_deadline`.
    ready_min: u64,
    /// The wheel's time: everything due at or before it has been handed out or is on `ready`.
    elapsed: u64,
    /// A lower bound on the start of the next slot (or overflow epoch) `poll` must visit:
    /// exact after a `poll`, lowered by every filing, left alone by `cancel` (then `poll`
    /// visits at most a slot that has emptied meanwhile, finds nothing, and looks again).
    /// `poll(now)` with `now` below it and an empty ready list only moves `elapsed`: O(1)
    /// instead of a scan of the levels' bitmaps.
    next_due: u64,
    /// Generation for the next insert; never reused, so ids are unique for the wheel's life.
    next_gen: u64,
}

impl<T> fmt::Debug for Wheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Payloads are not required to be Debug; show the shape instead.
        f.debug_struct("Wheel")
            .field("len", &self.entries.len())
            .field("elapsed", &self.elapsed)
            .field(
                "occupied",
                &self.occupied.iter().map(|o| o.summary).collect::<Vec<_>>(),
            )
            .field("overflow", &self.counts[OVERFLOW].live)
            .field("ready", &self.counts[READY].live)
            .finish()
    }
}

/// The level for `deadline` seen from `elapsed`, or `None` for the overflow list.
///
/// Requires `deadline > elapsed`.
#[inline]
fn level_for(elapsed: u64, deadline: u64) -> Option<usize> {
    debug_assert!(
        deadline > elapsed,
        "deadline {deadline} <= elapsed {elapsed}"
    );
    let masked = (elapsed ^ deadline) | (SLOTS as u64 - 1);
    if masked >= WHEEL_SPAN {
        return None;
    }
    let significant = 63 - masked.leading_zeros() as usize;
    Some(significant / LEVEL_BITS as usize)
}

/// The slot of `deadline` on `level`.
#[inline]
fn slot_for(deadline: u64, level: usize) -> usize {
    ((deadline >> (level * LEVEL_BITS as usize)) as usize) & (SLOTS - 1)
}

impl<T> Wheel<T> {
    /// An empty wheel whose time starts at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self::with_capacity(now_ms, 0)
    }

    /// An empty wheel with room for `capacity` timers before the slab reallocates.
    pub fn with_capacity(now_ms: u64, capacity: usize) -> Self {
        Wheel {
            entries: Slab::with_capacity(capacity),
            keys: (0..NUM_LISTS).map(|_| Vec::new()).collect(),
            counts: Box::new([Count::default(); NUM_LISTS]),
            occupied: [Occupied::EMPTY; NUM_LEVELS],
            overflow_min: u64::MAX,
            ready_min: u64::MAX,
            elapsed: now_ms,
            next_due: u64::MAX,
            next_gen: 0,
        }
    }

    /// Schedules `payload` to be handed out by the first `poll(now)` with `now >= deadline_ms`.
    ///
    /// A deadline at or before the wheel's current time fires on the next poll.
    ///
    /// # Panics
    ///
    /// If about 2.1 billion timers (`(u32::MAX - 16) / 2`) are already pending: slab keys and
    /// list positions are stored as `u32` to keep entries small.
    pub fn insert(&mut self, deadline_ms: u64, payload: T) -> TimerId {
        let key = self.entries.vacant_key();
        assert!(
            key < MAX_TIMERS,
            "timer wheel full: {} pending timers",
            self.entries.len()
        );
        let gen = self.next_gen;
        self.next_gen += 1;
        // Checked against MAX_TIMERS above, so it fits.
        let key = key as u32;
        let (home, slot, pos) = self.file(key, deadline_ms);
        self.entries.insert(Entry {
            payload,
            deadline: deadline_ms,
            gen,
            pos,
            home,
            list: list_index(home, slot) as u16,
        });
        TimerId { key, gen }
    }

    /// Removes a pending timer and returns its payload; `None` (touching nothing) if `id` has
    /// already fired or been cancelled.
    ///
    /// Touches the entry (one slab access) and the list's counters in L1; the list's key
    /// vector only when the list empties or is compacted.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let list = self.lookup(id)?.list();
        // Remove first, so a compaction triggered by `forget` already sees the key as dead.
        let payload = self.entries.remove(id.key as usize).payload;
        self.forget(list);
        Some(payload)
    }

    /// Moves a pending timer to `deadline_ms` (earlier or later), keeping its id. Returns
    /// `false` (touching nothing) if `id` has already fired or been cancelled.
    pub fn reschedule(&mut self, id: TimerId, deadline_ms: u64) -> bool {
        let Some(entry) = self.lookup(id) else {
            return false;
        };
        let list = entry.list();
        let (home, slot) = self.home_for(deadline_ms);
        if list == list_index(home, slot) {
            // Same list (a TOUCH that stays within its slot): only the deadline changes. The
            // ready/overflow lower bounds must still cover the new deadline.
            match home {
                Home::Ready => self.ready_min = self.ready_min.min(deadline_ms),
                Home::Overflow => {
                    self.overflow_min = self.overflow_min.min(deadline_ms);
                    self.next_due = self.next_due.min(self.overflow_start());
                }
                // Same slot, same start: `next_due` still holds.
                _ => {}
            }
            self.entries[id.key as usize].deadline = deadline_ms;
            return true;
        }
        self.entries[id.key as usize].pos = DETACHED;
        self.forget(list);
        self.link(id.key, deadline_ms);
        true
    }

    /// The deadline of a pending timer, `None` if `id` is stale.
    pub fn deadline(&self, id: TimerId) -> Option<u64> {
        self.lookup(id).map(|e| e.deadline)
    }

    /// The payload of a pending timer, `None` if `id` is stale.
    pub fn get(&self, id: TimerId) -> Option<&T> {
        self.lookup(id).map(|e| &e.payload)
    }

    /// The payload of a pending timer, mutably; `None` if `id` is stale.
    pub fn get_mut(&mut self, id: TimerId) -> Option<&mut T> {
        match self.entries.get_mut(id.key as usize) {
            Some(e) if e.gen == id.gen => Some(&mut e.payload),
            _ => None,
        }
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Slots allocated in the slab (pending timers plus free slots), for memory accounting.
    pub fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// The earliest time at which `poll` may hand something out: never later than the earliest
    /// pending deadline, but possibly earlier (a cascade point, or a lower bound left by a
    /// cancelled timer). May be at or before the last polled time when a timer was inserted in
    /// the past. `None` when the wheel is empty.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.counts[READY].live > 0 {
            return Some(self.ready_min);
        }
        self.next_expiration().map(|e| e.deadline)
    }

    /// Appends to `out` the payload of every pending timer whose deadline is `<= now_ms`, and
    /// none other. The order within one call is unspecified.
    ///
    /// Time going backwards (`now_ms` below an earlier poll's) does not move the wheel back;
    /// such a call only hands out timers inserted in the past with a deadline `<= now_ms`.
    pub fn poll(&mut self, now_ms: u64, out: &mut Vec<T>) {
        if now_ms < self.elapsed {
            // A monotonic clock never gets here; scanning the ready list keeps the contract
            // ("every deadline <= now, none early") exact anyway. Wheel entries are all due
            // after `elapsed > now_ms`, so none of them can be due.
            self.fire_list(READY, now_ms, out);
            return;
        }
        if self.counts[READY].live > 0 {
            // Everything on the ready list is due at or before `elapsed <= now_ms`.
            self.fire_list(READY, now_ms, out);
        } else if now_ms < self.next_due {
            // Nothing due yet (the common case for a reactor polling every iteration): moving
            // `elapsed` short of every slot start changes no entry's level or slot.
            self.elapsed = now_ms;
            return;
        }
        self.next_due = u64::MAX;
        while let Some(exp) = self.next_expiration() {
            if exp.deadline > now_ms {
                self.next_due = exp.deadline;
                break;
            }
            // Invariant: slot starts are always ahead of `elapsed`, so time only moves forward.
            debug_assert!(
                exp.deadline > self.elapsed,
                "expiration {exp:?} not after elapsed {}",
                self.elapsed
            );
            self.elapsed = exp.deadline;
            self.fire_list(exp.list, now_ms, out);
        }
        self.elapsed = now_ms;
    }

    /// The entry for `id`, if it is still pending.
    fn lookup(&self, id: TimerId) -> Option<&Entry<T>> {
        self.entries
            .get(id.key as usize)
            .filter(|e| e.gen == id.gen)
    }

    /// The next slot (or overflow epoch) `poll` must visit; see the module doc's invariants.
    fn next_expiration(&self) -> Option<Expiration> {
        for (level, occupied) in self.occupied.iter().enumerate() {
            let Some(slot) = occupied.first() else {
                continue;
            };
            let shift = level * LEVEL_BITS as usize;
            let level_span = 1u64 << (shift + LEVEL_BITS as usize);
            let deadline = (self.elapsed & !(level_span - 1)) + ((slot as u64) << shift);
            return Some(Expiration {
                deadline,
                list: level * SLOTS + slot,
            });
        }
        if self.counts[OVERFLOW].live == 0 {
            return None;
        }
        Some(Expiration {
            deadline: self.overflow_start(),
            list: OVERFLOW,
        })
    }

    /// When `poll` visits the overflow list (once the levels are empty). Overflow entries all
    /// lie in later epochs than `elapsed`, and none before the epoch of `overflow_min`.
    /// Saturating: a deadline in the last epoch never overflows.
    fn overflow_start(&self) -> u64 {
        let next_epoch = (self.elapsed | (WHEEL_SPAN - 1)).saturating_add(1);
        next_epoch.max(self.overflow_min & !(WHEEL_SPAN - 1))
    }

    /// The list and slot an entry with `deadline` belongs to, given the current `elapsed`.
    fn home_for(&self, deadline: u64) -> (Home, u16) {
        if deadline <= self.elapsed {
            return (Home::Ready, READY_SLOT);
        }
        match level_for(self.elapsed, deadline) {
            // A slot is < SLOTS <= 2^16.
            Some(level) => (Home::level(level), slot_for(deadline, level) as u16),
            None => (Home::Overflow, OVERFLOW_SLOT),
        }
    }

    /// Appends `key` to the list its `deadline` belongs to and returns where it went; the
    /// caller records that in the entry.
    fn file(&mut self, key: u32, deadline: u64) -> (Home, u16, u32) {
        let (home, slot) = self.home_for(deadline);
        let start = match home {
            Home::Ready => {
                self.ready_min = self.ready_min.min(deadline);
                // `poll` checks the ready list's count before `next_due`.
                u64::MAX
            }
            Home::Overflow => {
                self.overflow_min = self.overflow_min.min(deadline);
                self.overflow_start()
            }
            level => {
                self.occupied[level as usize].set(slot as usize);
                // The slot's start: the deadline shares every bit above the slot's with
                // `elapsed` (see the module doc), so this is what `next_expiration` computes.
                deadline & !((1u64 << (level as usize * LEVEL_BITS as usize)) - 1)
            }
        };
        self.next_due = self.next_due.min(start);
        let list = list_index(home, slot);
        let count = &mut self.counts[list];
        // A list holds at most 2 * live + COMPACT_SLACK keys and live <= the slab's length,
        // capped at MAX_TIMERS, so positions stay below DETACHED.
        let pos = count.len;
        count.len += 1;
        count.live += 1;
        self.keys[list].push(key);
        (home, slot, pos)
    }

    /// Files entry `key` (currently in no list) with its new `deadline`.
    fn link(&mut self, key: u32, deadline: u64) {
        let (home, slot, pos) = self.file(key, deadline);
        let entry = &mut self.entries[key as usize];
        entry.deadline = deadline;
        entry.home = home;
        entry.list = list_index(home, slot) as u16;
        entry.pos = pos;
    }

    /// Accounts for one live key leaving list `list`, whose entry is already detached or
    /// removed: resets the list when it has no live key left, or compacts it when tombstones
    /// dominate. Only the dense counters are read unless one of those happens.
    fn forget(&mut self, list: usize) {
        let count = &mut self.counts[list];
        count.live -= 1;
        if count.live == 0 || count.len > 2 * count.live + COMPACT_SLACK as u32 {
            self.forget_slow(list);
        }
    }

    /// The rare part of [`Self::forget`], out of line to keep `cancel` short.
    #[cold]
    #[inline(never)]
    fn forget_slow(&mut self, list: usize) {
        if self.counts[list].live == 0 {
            // Only tombstones left: reset, keeping the allocation.
            self.keys[list].clear();
            self.counts[list].len = 0;
            if list < NUM_LEVELS * SLOTS {
                self.occupied[list / SLOTS].clear(list % SLOTS);
            }
        } else {
            self.compact(list);
        }
    }

    /// Whether `key`, found at index `index` of list `list`, is live there.
    fn is_filed(&self, key: u32, list: usize, index: usize) -> bool {
        match self.entries.get(key as usize) {
            Some(e) => e.pos as usize == index && e.list() == list,
            None => false,
        }
    }

    /// Drops the tombstones of list `list`, keeping live keys in order. O(len), paid for by the
    /// more than `len / 2` removals that made the tombstones.
    fn compact(&mut self, list: usize) {
        let mut keys = std::mem::take(&mut self.keys[list]);
        let mut kept = 0;
        for index in 0..keys.len() {
            let key = keys[index];
            if self.is_filed(key, list, index) {
                keys[kept] = key;
                self.entries[key as usize].pos = kept as u32;
                kept += 1;
            }
        }
        keys.truncate(kept);
        debug_assert_eq!(
            kept, self.counts[list].live as usize,
            "live count out of step in list {list}"
        );
        // kept <= the old length, a u32.
        self.counts[list].len = kept as u32;
        self.keys[list] = keys;
    }

    /// Empties list `list`: entries due by `now` go to `out`, the rest are refiled from the
    /// current `elapsed` (a lower level, or back onto the ready/overflow list). Tombstones are
    /// skipped.
    ///
    /// Works in batches of [`FIRE_BATCH`] keys: a first pass only loads each entry's filing
    /// (independent loads, so their cache misses overlap), a second fires or refiles from
    /// cache. On a million pending timers that halves the cost of a cascade.
    fn fire_list(&mut self, list: usize, now: u64, out: &mut Vec<T>) {
        let mut keys = std::mem::take(&mut self.keys[list]);
        self.counts[list] = Count::default();
        match list {
            // The list's lower bound is rebuilt by `file` from whatever goes back on it.
            READY => self.ready_min = u64::MAX,
            OVERFLOW => self.overflow_min = u64::MAX,
            _ => self.occupied[list / SLOTS].clear(list % SLOTS),
        }
        // A key refiled into this same list (ready/overflow only) gets a position in the new
        // vector, but its live occurrence is its last one here, so no later index can mistake
        // it for live again.
        let mut due = [None; FIRE_BATCH];
        for (batch, chunk) in keys.chunks(FIRE_BATCH).enumerate() {
            let base = batch * FIRE_BATCH;
            for (j, &key) in chunk.iter().enumerate() {
                due[j] = match self.entries.get(key as usize) {
                    Some(e) if e.pos as usize == base + j && e.list() == list => Some(e.deadline),
                    _ => None,
                };
            }
            for (&key, &deadline) in chunk.iter().zip(&due) {
                match deadline {
                    Some(deadline) if deadline <= now => {
                        out.push(self.entries.remove(key as usize).payload)
                    }
                    // Level slots never refile into themselves: the entry moves lower.
                    Some(deadline) => self.link(key, deadline),
                    None => {}
                }
            }
        }
        keys.clear();
        // Hand the allocation back so the steady state does not allocate. Only the ready and
        // overflow lists can have been refilled meanwhile; then the old buffer is dropped.
        if self.keys[list].is_empty() {
            self.keys[list] = keys;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, HashMap};

    /// SplitMix64: a tiny seeded PRNG so property tests are reproducible without a dependency.
    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform-ish in `0..n` (n > 0).
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    impl<T> Wheel<T> {
        /// Checks the bookkeeping against the lists themselves: the dense counters, the
        /// occupied bits, every entry's position, and that `next_due` is a lower bound.
        fn check_invariants(&self) {
            let mut filed = 0;
            for list in 0..NUM_LISTS {
                let keys = &self.keys[list];
                let count = self.counts[list];
                assert_eq!(count.len as usize, keys.len(), "len of list {list}");
                let live = (0..keys.len())
                    .filter(|&i| self.is_filed(keys[i], list, i))
                    .count();
                assert_eq!(count.live as usize, live, "live count of list {list}");
                assert!(
                    live > 0 || keys.is_empty(),
                    "list {list}: only tombstones kept"
                );
                assert!(
                    keys.len() <= 2 * live + COMPACT_SLACK,
                    "list {list} not compacted"
                );
                if list < NUM_LEVELS * SLOTS {
                    let occupied = &self.occupied[list / SLOTS];
                    assert_eq!(
                        occupied.contains(list % SLOTS),
                        live > 0,
                        "occupied bit of list {list}"
                    );
                    let word = (list % SLOTS) / 64;
                    assert_eq!(
                        occupied.summary >> word & 1 == 1,
                        occupied.words[word] != 0,
                        "summary bit of list {list}"
                    );
                }
                filed += live;
            }
            assert_eq!(filed, self.entries.len(), "every entry filed exactly once");
            if let Some(exp) = self.next_expiration() {
                assert!(
                    self.next_due <= exp.deadline,
                    "next_due {} > {exp:?}",
                    self.next_due
                );
            }
        }
    }

    fn polled<T>(w: &mut Wheel<T>, now: u64) -> Vec<T> {
        let mut out = Vec::new();
        w.poll(now, &mut out);
        out
    }

    #[test]
    fn level_and_slot_math() {
        // (elapsed, deadline, level)
        let mut cases = vec![
            (0, 1, Some(0)),
            (0, SLOTS as u64 - 1, Some(0)),
            (0, SLOTS as u64, Some(1)),
            (SLOTS as u64 - 1, SLOTS as u64, Some(1)),
            (0, WHEEL_SPAN - 1, Some(NUM_LEVELS - 1)),
            (0, WHEEL_SPAN, None),
            (WHEEL_SPAN - 1, WHEEL_SPAN, None),
            (WHEEL_SPAN, WHEEL_SPAN + 1, Some(0)),
            (0, u64::MAX, None),
            (u64::MAX - 1, u64::MAX, Some(0)),
        ];
        // Each level's first and last deadline seen from 0.
        for level in 1..NUM_LEVELS {
            let first = 1u64 << (level * LEVEL_BITS as usize);
            cases.push((0, first - 1, Some(level - 1)));
            cases.push((0, first, Some(level)));
            cases.push((first - 1, first, Some(level)));
        }
        // The geometry of the module doc's table: 256 slots, 5 levels, an hour on level 2.
        assert_eq!((SLOTS, NUM_LEVELS, WHEEL_SPAN), (256, 5, 1 << 40));
        cases.extend([
            (0, 255, Some(0)),
            (0, 256, Some(1)),
            (0, 65_535, Some(1)),
            (0, 65_536, Some(2)),
            (0, 3_600_000, Some(2)),
            (0, (1 << 24) - 1, Some(2)),
            (0, 1 << 24, Some(3)),
            (0, 1 << 32, Some(4)),
        ]);
        for (elapsed, deadline, level) in cases {
            assert_eq!(
                level_for(elapsed, deadline),
                level,
                "level_for({elapsed}, {deadline})"
            );
        }
        for level in 0..NUM_LEVELS {
            let shift = level * LEVEL_BITS as usize;
            for slot in 0..SLOTS {
                let deadline = (slot as u64) << shift;
                assert_eq!(slot_for(deadline, level), slot, "level {level} slot {slot}");
                assert_eq!(slot_for(deadline | ((1 << shift) - 1), level), slot);
            }
        }
    }

    #[test]
    fn entry_is_small() {
        // The slab stores `enum { Vacant(usize), Occupied(Entry<T>) }`; `Home`'s niche keeps it
        // at the entry's size: 24 bytes of bookkeeping next to a u64 payload.
        assert_eq!(std::mem::size_of::<Entry<u64>>(), 32);
        assert_eq!(std::mem::size_of::<Option<Entry<u64>>>(), 32);
        assert_eq!(std::mem::size_of::<Entry<()>>(), 24);
        assert_eq!(std::mem::size_of::<TimerId>(), 16);
    }

    /// `poll`'s fast path (`now` below `next_due`) must not skip a slot that a later insert or
    /// reschedule made due earlier, on a level or on the overflow list.
    #[test]
    fn quick_polls_see_earlier_filings() {
        let mut w = Wheel::new(0);
        w.insert(3_600_000, 'h');
        assert!(polled(&mut w, 1).is_empty());
        // next_due is now the hour's level-3 slot start; a short timer must lower it.
        w.insert(5, 's');
        assert!(polled(&mut w, 4).is_empty());
        assert_eq!(polled(&mut w, 5), vec!['s']);
        // Overflow: a far timer moved to an earlier epoch stays on the overflow list.
        let mut w = Wheel::new(0);
        let far = w.insert(5 * WHEEL_SPAN, 'f');
        assert!(polled(&mut w, 10).is_empty());
        assert!(w.reschedule(far, WHEEL_SPAN + 3));
        assert!(polled(&mut w, WHEEL_SPAN + 2).is_empty());
        assert_eq!(polled(&mut w, WHEEL_SPAN + 3), vec!['f']);
        // A cancel leaves next_due low: the next poll finds nothing and recomputes it.
        let mut w = Wheel::new(0);
        let a = w.insert(100, 'a');
        w.insert(10_000, 'b');
        assert!(polled(&mut w, 1).is_empty());
        w.cancel(a);
        assert!(polled(&mut w, 100).is_empty());
        let level = level_for(100, 10_000).unwrap();
        assert_eq!(
            w.next_due,
            10_000 & !((1 << (level * LEVEL_BITS as usize)) - 1)
        );
        w.check_invariants();
        assert_eq!(polled(&mut w, 10_000), vec!['b']);
        w.check_invariants();
    }

    /// Slots with more keys than one `fire_list` batch, with tombstones across batch edges.
    #[test]
    fn large_slots_fire_across_batches() {
        let mut w = Wheel::new(0);
        let ids: Vec<TimerId> = (0..10 * FIRE_BATCH as u64)
            .map(|i| w.insert(5_000 + i % 3, i))
            .collect();
        let mut want = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            match i % 5 {
                0 => assert_eq!(w.cancel(*id), Some(i as u64)),
                // Out to another slot and back: a tombstone, then a live key further on.
                1 => {
                    assert!(w.reschedule(*id, 9_000));
                    assert!(w.reschedule(*id, 5_001));
                    want.push(i as u64);
                }
                _ => want.push(i as u64),
            }
        }
        w.check_invariants();
        assert!(polled(&mut w, 4_999).is_empty());
        w.check_invariants();
        let mut got = polled(&mut w, 5_002);
        got.sort_unstable();
        assert_eq!(got, want);
        assert!(w.is_empty());
        w.check_invariants();
    }

    #[test]
    fn worked_example_from_module_doc() {
        let mut w = Wheel::new(1_000);
        let id = w.insert(61_000, "msg");
        assert_eq!(w.next_deadline(), Some(60_928));
        assert!(polled(&mut w, 60_928).is_empty());
        assert_eq!(w.next_deadline(), Some(61_000));
        assert!(polled(&mut w, 60_999).is_empty());
        assert_eq!(w.deadline(id), Some(61_000));
        assert_eq!(polled(&mut w, 61_000), vec!["msg"]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn zero_delay_and_past_deadlines_fire_on_next_poll() {
        let mut w = Wheel::new(100);
        w.insert(100, 'a');
        w.insert(5, 'b');
        w.insert(0, 'c');
        assert_eq!(w.len(), 3);
        // Lower bound, never later than the earliest deadline.
        assert_eq!(w.next_deadline(), Some(0));
        let mut got = polled(&mut w, 100);
        got.sort();
        assert_eq!(got, vec!['a', 'b', 'c']);
        assert!(w.is_empty());
        // Zero delay after time has moved.
        w.insert(100, 'd');
        assert_eq!(polled(&mut w, 100), vec!['d']);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn boundaries_fire_exactly_on_time() {
        // Every level boundary of this geometry and of the old 64-slot one, and an hour.
        let mut deadlines = vec![1, 3_600_000, WHEEL_SPAN + 1];
        for bits in (6..=36)
            .step_by(6)
            .chain((1..=NUM_LEVELS).map(|l| l * LEVEL_BITS as usize))
        {
            let edge = 1u64 << bits;
            deadlines.extend([edge - 1, edge, edge + 1]);
        }
        for start in [0u64, 1, 63, 64, SLOTS as u64 - 1, 1_000_000, WHEEL_SPAN - 1] {
            for &delta in &deadlines {
                let deadline = start + delta;
                let mut w = Wheel::new(start);
                w.insert(deadline, deadline);
                // Walk by next_deadline: each step is no later than the deadline.
                let mut steps = 0;
                loop {
                    let next = w.next_deadline().unwrap();
                    assert!(next <= deadline, "next {next} > deadline {deadline}");
                    if next == deadline {
                        break;
                    }
                    assert!(polled(&mut w, next).is_empty(), "fired early at {next}");
                    steps += 1;
                    assert!(steps <= NUM_LEVELS + 1, "too many cascades for {deadline}");
                }
                assert!(polled(&mut w, deadline - 1).is_empty());
                assert_eq!(polled(&mut w, deadline), vec![deadline]);
            }
        }
    }

    #[test]
    fn deadlines_beyond_the_top_level() {
        let mut w = Wheel::new(0);
        let far = [
            WHEEL_SPAN,
            3 * WHEEL_SPAN + 17,
            1 << 50,
            u64::MAX - 1,
            u64::MAX,
        ];
        for &d in &far {
            w.insert(d, d);
        }
        let near = w.insert(10, 10);
        assert_eq!(w.next_deadline(), Some(10));
        assert_eq!(polled(&mut w, 10), vec![10]);
        assert!(w.cancel(near).is_none());
        for &d in &far {
            let next = w.next_deadline().unwrap();
            assert!(next <= d, "next {next} > {d}");
            assert!(polled(&mut w, d - 1).is_empty(), "fired before {d}");
            assert_eq!(polled(&mut w, d), vec![d]);
        }
        assert!(w.is_empty());
    }

    #[test]
    fn huge_jump_does_not_walk_ticks() {
        // Stepping tick by tick through 2^60 ms would never finish.
        let mut w = Wheel::new(0);
        w.insert(1 << 60, 1);
        w.insert(10 * 3_600_000, 2);
        w.insert(5, 3);
        let mut got = polled(&mut w, 1 << 61);
        got.sort();
        assert_eq!(got, vec![1, 2, 3]);
        // Ten hours at once with a spread of timers.
        let mut w = Wheel::new(0);
        for i in 0..1_000u64 {
            w.insert(i * 36_000, i);
        }
        assert_eq!(polled(&mut w, 10 * 3_600_000).len(), 1_000);
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let mut w = Wheel::new(1_000);
        w.insert(1_500, 'w');
        assert!(polled(&mut w, 500).is_empty());
        // A past insert that is not due even at the earlier time stays pending.
        w.insert(900, 'p');
        w.insert(400, 'q');
        assert_eq!(polled(&mut w, 500), vec!['q']);
        assert_eq!(w.len(), 2);
        assert!(polled(&mut w, 1_499).contains(&'p'));
        assert_eq!(polled(&mut w, 1_500), vec!['w']);
    }

    #[test]
    fn cancel_after_fire_twice_and_stale_reuse() {
        let mut w = Wheel::new(0);
        let a = w.insert(10, "a");
        assert_eq!(polled(&mut w, 10), vec!["a"]);
        assert_eq!(w.cancel(a), None, "cancel after fire");
        let b = w.insert(20, "b");
        assert_eq!(w.cancel(b), Some("b"));
        assert_eq!(w.cancel(b), None, "cancel twice");
        // The slot is reused; the old ids must not reach the new timer.
        let c = w.insert(30, "c");
        assert_eq!(c.key, b.key, "test expects slab slot reuse");
        assert_eq!(w.cancel(b), None);
        assert_eq!(w.cancel(a), None);
        assert!(!w.reschedule(b, 5));
        assert_eq!(w.get(b), None);
        assert_eq!(w.get_mut(a), None);
        assert_eq!(w.deadline(b), None);
        assert_eq!(w.get(c), Some(&"c"));
        assert_eq!(w.deadline(c), Some(30));
        assert_eq!(polled(&mut w, 30), vec!["c"]);
    }

    #[test]
    fn reschedule_earlier_and_later() {
        let mut w = Wheel::new(0);
        let early = w.insert(3_600_000, 1);
        let late = w.insert(100, 2);
        assert!(w.reschedule(early, 50));
        assert!(w.reschedule(late, 200_000));
        assert_eq!(w.deadline(early), Some(50));
        assert_eq!(w.next_deadline(), Some(50));
        assert!(polled(&mut w, 49).is_empty());
        assert_eq!(polled(&mut w, 50), vec![1]);
        assert!(polled(&mut w, 199_999).is_empty());
        // TOUCH: push it out again, from the new time.
        assert!(w.reschedule(late, 260_000));
        *w.get_mut(late).unwrap() = 3;
        // Within the same slot (fast path), later then earlier.
        assert!(w.reschedule(late, 260_001));
        assert!(w.reschedule(late, 260_000));
        assert_eq!(w.deadline(late), Some(260_000));
        assert!(polled(&mut w, 259_999).is_empty());
        // Reschedule into the past fires on the next poll.
        assert!(w.reschedule(late, 1));
        assert_eq!(polled(&mut w, 259_999), vec![3]);
        assert!(!w.reschedule(late, 5), "stale after firing");
    }

    /// Keys left behind by cancel and reschedule are bounded and never fire anything.
    #[test]
    fn tombstones_are_compacted_and_never_fire() {
        let mut rng = SplitMix(3);
        let mut w = Wheel::new(0);
        let ids: Vec<TimerId> = (0..1_000u64).map(|i| w.insert(100 + i % 7, i)).collect();
        let mut kept = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            if rng.below(10) == 0 {
                kept.push(i as u64);
            } else {
                assert_eq!(w.cancel(id), Some(i as u64));
            }
        }
        // Bounce the survivors between two slots many times. An anchor stays in each slot so
        // neither list ever empties: only compaction can bound them.
        w.insert(1_000, 5_000);
        w.insert(6_000, 6_000);
        kept.push(6_000);
        for round in 0..200u64 {
            for &i in kept.iter().filter(|&&i| i < 1_000) {
                assert!(w.reschedule(ids[i as usize], 1_000 + 5_000 * (round % 2)));
            }
        }
        let total_keys: usize = w.keys.iter().map(|l| l.len()).sum();
        assert!(
            total_keys <= 2 * kept.len() + 2 * COMPACT_SLACK,
            "{total_keys} keys for {} live timers",
            kept.len()
        );
        // The last round moved everything to 6_000 (round 199 is odd).
        assert_eq!(polled(&mut w, 5_999), vec![5_000]);
        let mut got = polled(&mut w, 6_000);
        got.sort_unstable();
        assert_eq!(got, kept);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
        // Cancelling everything leaves no occupied slot behind.
        let a = w.insert(70_000, 1);
        let b = w.insert(70_001, 2);
        w.cancel(a);
        w.cancel(b);
        assert_eq!(w.next_deadline(), None);
        assert!(
            w.keys.iter().all(|l| l.is_empty()),
            "tombstones left behind"
        );
        assert_eq!(w.occupied, [Occupied::EMPTY; NUM_LEVELS]);
    }

    #[test]
    fn a_million_timers_with_the_same_deadline() {
        const N: u32 = 1_000_000;
        let mut w = Wheel::with_capacity(0, N as usize);
        for i in 0..N {
            w.insert(5_000, i);
        }
        assert_eq!(w.len(), N as usize);
        // Cascade once through a lower level, then fire all at once.
        assert_eq!(level_for(0, 5_000), Some(1));
        let slot_start = 5_000 & !(SLOTS as u64 - 1);
        assert_eq!(w.next_deadline(), Some(slot_start));
        let mut out = Vec::with_capacity(N as usize);
        w.poll(4_999, &mut out);
        assert!(out.is_empty());
        w.poll(5_000, &mut out);
        assert_eq!(out.len(), N as usize);
        out.sort_unstable();
        assert!(out.iter().copied().eq(0..N));
        assert!(w.is_empty());
    }

    /// Reference model: a `BinaryHeap` with lazy deletion. Each live timer has a version; heap
    /// items whose version is stale (cancelled or rescheduled) are skipped when popped.
    #[derive(Default)]
    struct Model {
        heap: BinaryHeap<Reverse<(u64, u64, u64)>>,
        /// payload -> (deadline, version, id)
        live: HashMap<u64, (u64, u64, TimerId)>,
        version: u64,
    }

    impl Model {
        fn push(&mut self, payload: u64, deadline: u64, id: TimerId) {
            self.version += 1;
            self.live.insert(payload, (deadline, self.version, id));
            self.heap.push(Reverse((deadline, payload, self.version)));
        }

        fn poll(&mut self, now: u64) -> Vec<u64> {
            let mut fired = Vec::new();
            while let Some(&Reverse((deadline, payload, version))) = self.heap.peek() {
                if deadline > now {
                    break;
                }
                self.heap.pop();
                match self.live.get(&payload) {
                    Some(&(_, v, _)) if v == version => {
                        self.live.remove(&payload);
                        fired.push(payload);
                    }
                    _ => {}
                }
            }
            fired.sort_unstable();
            fired
        }

        fn min_deadline(&self) -> Option<u64> {
            self.live.values().map(|&(d, _, _)| d).min()
        }
    }

    /// Random inserts, cancels, reschedules and polls, checked against the model after every
    /// step: the same set fires at every poll (so none early and none late), and
    /// `next_deadline` is never later than the true earliest deadline.
    fn property_run(seed: u64, steps: usize, narrow: bool) {
        let mut rng = SplitMix(seed);
        let mut now = rng.below(1 << 40);
        let mut w: Wheel<u64> = Wheel::new(now);
        let mut model = Model::default();
        let mut ids: Vec<TimerId> = Vec::new();
        let mut dead: Vec<TimerId> = Vec::new();
        let mut next_payload = 0u64;
        let spread = |rng: &mut SplitMix| -> u64 {
            if narrow {
                // Few slots, many timers each: exercises tombstones and compaction.
                return 64 * 64 + rng.below(4 * 64);
            }
            match rng.below(8) {
                0 => rng.below(4),
                1 => rng.below(64),
                2 => rng.below(4_096),
                3 => rng.below(3_600_000),
                4 => rng.below(1 << 30),
                5 => rng.below(1 << 40),
                // Level boundaries, of this geometry and of 64-slot levels.
                6 if rng.below(2) == 0 => {
                    (1u64 << (LEVEL_BITS as u64 * rng.below(NUM_LEVELS as u64 + 1))) - rng.below(2)
                }
                6 => 64u64.pow(rng.below(7) as u32) - rng.below(2),
                _ => rng.below(300),
            }
        };
        for step in 0..steps {
            match rng.below(10) {
                0..=3 => {
                    let deadline = if rng.below(10) == 0 {
                        now.saturating_sub(rng.below(100))
                    } else {
                        now.saturating_add(spread(&mut rng))
                    };
                    let payload = next_payload;
                    next_payload += 1;
                    let id = w.insert(deadline, payload);
                    model.push(payload, deadline, id);
                    ids.push(id);
                }
                4 if !ids.is_empty() => {
                    let i = rng.below(ids.len() as u64) as usize;
                    let id = ids.swap_remove(i);
                    let got = w.cancel(id);
                    let want = w_model_cancel(&mut model, id);
                    assert_eq!(got, want, "seed {seed} step {step}: cancel {id:?}");
                    dead.push(id);
                }
                5 if !ids.is_empty() => {
                    let id = ids[rng.below(ids.len() as u64) as usize];
                    let deadline = now.saturating_add(spread(&mut rng)).saturating_sub(50);
                    let payload = *w.get(id).unwrap_or(&u64::MAX);
                    let ok = w.reschedule(id, deadline);
                    let live = model.live.get(&payload).map(|e| e.2) == Some(id);
                    assert_eq!(ok, live, "seed {seed} step {step}: reschedule {id:?}");
                    if ok {
                        model.push(payload, deadline, id);
                    }
                }
                6 if !dead.is_empty() => {
                    // Stale ids (cancelled or fired) must touch nothing.
                    let id = dead[rng.below(dead.len() as u64) as usize];
                    assert_eq!(w.cancel(id), None, "seed {seed} step {step}");
                    assert!(!w.reschedule(id, now), "seed {seed} step {step}");
                }
                _ => {
                    let advance = match rng.below(10) {
                        0 => rng.below(1 << 38),
                        1 => rng.below(3_600_000),
                        2 => 0,
                        _ => rng.below(200),
                    };
                    now = now.saturating_add(advance);
                    if rng.below(4) == 0 {
                        // Poll exactly at the wheel's own hint, like the reactor does.
                        if let Some(next) = w.next_deadline() {
                            now = now.max(next);
                        }
                    }
                    let mut got = Vec::new();
                    w.poll(now, &mut got);
                    got.sort_unstable();
                    let want = model.poll(now);
                    assert_eq!(got, want, "seed {seed} step {step}: poll({now})");
                    // Move fired ids to the stale list.
                    let (live, fired): (Vec<_>, Vec<_>) =
                        ids.iter().partition(|id| w.get(**id).is_some());
                    ids = live;
                    dead.extend(fired);
                }
            }
            assert_eq!(w.len(), model.live.len(), "seed {seed} step {step}: len");
            match (w.next_deadline(), model.min_deadline()) {
                (None, None) => {}
                (Some(hint), Some(min)) => {
                    assert!(hint <= min, "seed {seed} step {step}: hint {hint} > {min}")
                }
                other => panic!("seed {seed} step {step}: next_deadline {other:?}"),
            }
            w.check_invariants();
        }
    }

    fn w_model_cancel(model: &mut Model, id: TimerId) -> Option<u64> {
        let payload = model
            .live
            .iter()
            .find(|(_, &(_, _, i))| i == id)
            .map(|(&p, _)| p)?;
        model.live.remove(&payload);
        Some(payload)
    }

    #[test]
    fn property_matches_binary_heap_model() {
        for seed in 0..40 {
            property_run(seed, 2_000, false);
        }
    }

    #[test]
    fn property_matches_model_with_crowded_slots() {
        for seed in 100..120 {
            property_run(seed, 3_000, true);
        }
    }

    #[test]
    fn draining_by_next_deadline_terminates_in_order() {
        let mut rng = SplitMix(7);
        let mut w = Wheel::new(0);
        for _ in 0..5_000 {
            let d = 1 + rng.below(3_600_000);
            w.insert(d, d);
        }
        let mut polls = 0;
        let mut last = 0;
        while let Some(next) = w.next_deadline() {
            polls += 1;
            assert!(polls <= 5_000 * NUM_LEVELS, "no progress");
            for d in polled(&mut w, next) {
                assert_eq!(d, next, "fired at {next}, deadline {d}");
                assert!(d >= last);
                last = d;
            }
        }
    }
}
