//! Timer wheel micro-benchmark: `cargo bench --bench timer`.
//!
//! For 1 M and 10 M pending timers with deadlines spread uniformly over 1 ms..1 h, measures the
//! cost per timer of insert, cancel, reschedule and expire, and the heap bytes per pending timer,
//! for corq's `Wheel` and for a `BinaryHeap` with lazy deletion doing the same work. Rounds of
//! the two structures alternate, so load from other processes hits both alike; each figure is
//! the median of 3 rounds. Reported, not asserted.
//!
//! Workload per round (same seed for both structures):
//! * insert: fill an empty, pre-sized structure with N timers.
//! * cancel: cancel N/10 timers picked at random (the worst case: every cancel is a cache
//!   miss), then insert N/10 new ones (steady-state inserts reusing freed slots, reported as
//!   "insert (steady)").
//! * cancel (in order): cancel N/10 timers in insertion order, as FINs mostly arrive in
//!   roughly delivery order, then refill. Reported beside the random order, not instead of it,
//!   and not part of `round`.
//! * reschedule: move N/10 random timers to a new random deadline (TOUCH).
//! * expire: poll every millisecond from 1 to 3 600 000 (like a busy reactor), handing out all
//!   N timers; cost = total time / N. "(cascade)" is the part of it spent in the polls at
//!   multiples of 64 ms, where all cascading happens (every slot boundary of level 1 and up
//!   is a multiple of 64 ms for any level width of 6 bits or more), less the firing done
//!   there (at the other polls' per-timer rate) and less the cost of timing them.
//! * memory: bytes the global allocator holds for the structure after the fill, / N.
//!
//! Also printed: the memory floor, i.e. the latency of random 4-byte loads over 32 MB (the
//! size of the 1 M-timer slab), dependent (pointer chasing) and independent.

use corq::timer::{TimerId, Wheel};
use slab::Slab;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Counts live heap bytes so memory per timer is measured, not estimated.
struct Counting;

/// Bytes currently allocated through [`Counting`].
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarding the caller's contract to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarding the caller's contract to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarding the caller's contract to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One hour in ms: the spread of deadlines and the length of the expiry sweep.
const HOUR_MS: u64 = 3_600_000;
/// Rounds per configuration; the table shows the median.
const ROUNDS: usize = 3;

/// SplitMix64, seeded, so both structures see the same deadlines.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A deadline in 1..=HOUR_MS.
    fn deadline(&mut self) -> u64 {
        1 + self.next() % HOUR_MS
    }
    fn index(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The operations both structures offer.
trait Timers {
    type Id: Copy;
    fn with_capacity(n: usize) -> Self;
    fn insert(&mut self, deadline: u64, payload: u64) -> Self::Id;
    fn cancel(&mut self, id: Self::Id) -> Option<u64>;
    fn reschedule(&mut self, id: Self::Id, deadline: u64) -> Self::Id;
    fn poll(&mut self, now: u64, out: &mut Vec<u64>);
}

impl Timers for Wheel<u64> {
    type Id = TimerId;
    fn with_capacity(n: usize) -> Self {
        Wheel::with_capacity(0, n)
    }
    fn insert(&mut self, deadline: u64, payload: u64) -> TimerId {
        Wheel::insert(self, deadline, payload)
    }
    fn cancel(&mut self, id: TimerId) -> Option<u64> {
        Wheel::cancel(self, id)
    }
    fn reschedule(&mut self, id: TimerId, deadline: u64) -> TimerId {
        Wheel::reschedule(self, id, deadline);
        id
    }
    fn poll(&mut self, now: u64, out: &mut Vec<u64>) {
        Wheel::poll(self, now, out)
    }
}

/// The baseline: a min-heap of `(deadline, key, generation)` plus a slab of live timers.
/// Cancel removes from the slab only; stale heap items are skipped when they reach the top.
struct LazyHeap {
    /// Min-heap via `Reverse`.
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Live timers: (generation, payload).
    live: Slab<(u32, u64)>,
    /// Next generation.
    gen: u32,
}

impl Timers for LazyHeap {
    type Id = (u32, u32);
    fn with_capacity(n: usize) -> Self {
        LazyHeap {
            heap: BinaryHeap::with_capacity(n),
            live: Slab::with_capacity(n),
            gen: 0,
        }
    }
    fn insert(&mut self, deadline: u64, payload: u64) -> (u32, u32) {
        self.gen = self.gen.wrapping_add(1);
        let key = self.live.insert((self.gen, payload)) as u32;
        self.heap.push(Reverse((deadline, key, self.gen)));
        (key, self.gen)
    }
    fn cancel(&mut self, (key, gen): (u32, u32)) -> Option<u64> {
        match self.live.get(key as usize) {
            Some(&(g, _)) if g == gen => Some(self.live.remove(key as usize).1),
            _ => None,
        }
    }
    fn reschedule(&mut self, (key, gen): (u32, u32), deadline: u64) -> (u32, u32) {
        // A new generation in place invalidates the old heap item.
        self.gen = self.gen.wrapping_add(1);
        if let Some(e) = self.live.get_mut(key as usize) {
            if e.0 == gen {
                e.0 = self.gen;
                self.heap.push(Reverse((deadline, key, self.gen)));
            }
        }
        (key, self.gen)
    }
    fn poll(&mut self, now: u64, out: &mut Vec<u64>) {
        while let Some(&Reverse((deadline, key, gen))) = self.heap.peek() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            if let Some(&(g, _)) = self.live.get(key as usize) {
                if g == gen {
                    out.push(self.live.remove(key as usize).1);
                }
            }
        }
    }
}

/// ns per op for each phase, and bytes per pending timer.
#[derive(Clone, Copy, Default)]
struct Figures {
    insert: f64,
    cancel: f64,
    cancel_seq: f64,
    insert_steady: f64,
    reschedule: f64,
    expire: f64,
    /// Of `expire`, ns per timer spent in the polls at multiples of 64 ms (where every level
    /// >= 1 cascade happens), minus the firing done in those polls at the other polls' rate.
    cascade: f64,
    total: f64,
    bytes: f64,
}

fn ns_per(start: Instant, ops: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / ops as f64
}

fn round<W: Timers>(n: usize, seed: u64) -> Figures {
    let mut rng = SplitMix(seed);
    let deadlines: Vec<u64> = (0..n).map(|_| rng.deadline()).collect();
    let mut ids = Vec::with_capacity(n);
    let k = n / 10;
    let mut f = Figures::default();

    let before = ALLOCATED.load(Ordering::Relaxed);
    let mut busy = 0.0;
    let start = Instant::now();
    let mut w = W::with_capacity(n);
    for (i, &d) in deadlines.iter().enumerate() {
        ids.push(w.insert(d, i as u64));
    }
    f.insert = ns_per(start, n);
    busy += start.elapsed().as_nanos() as f64;
    f.bytes = (ALLOCATED.load(Ordering::Relaxed) - before) as f64 / n as f64;

    // The ids to cancel are gathered before the clock starts: the random order is the point,
    // but a random read of the harness's own id table would add a cache miss to every cancel.
    let victims: Vec<W::Id> = (0..k).map(|_| ids[rng.index(n)]).collect();
    let start = Instant::now();
    let mut cancelled = 0;
    for &id in &victims {
        cancelled += w.cancel(id).is_some() as usize;
    }
    f.cancel = ns_per(start, k);
    busy += start.elapsed().as_nanos() as f64;
    // Refill to N pending, reusing the freed slots.
    let refill: Vec<u64> = (0..cancelled).map(|_| rng.deadline()).collect();
    let start = Instant::now();
    for (j, &d) in refill.iter().enumerate() {
        black_box(w.insert(d, (n + j) as u64));
    }
    f.insert_steady = ns_per(start, cancelled.max(1));
    busy += start.elapsed().as_nanos() as f64;

    // Cancel N/10 timers in insertion order (a FIN for most in-flight messages arrives in
    // roughly delivery order), then refill again. Not part of `round`, which stays comparable.
    let first = rng.index(n - k + 1);
    let start = Instant::now();
    let mut cancelled_seq = 0;
    for id in &ids[first..first + k] {
        cancelled_seq += w.cancel(*id).is_some() as usize;
    }
    f.cancel_seq = ns_per(start, k);
    for j in 0..cancelled_seq {
        black_box(w.insert(rng.deadline(), (2 * n + j) as u64));
    }

    // As for cancel: gather the random ids first and scatter the new ones back afterwards, so
    // only the structure's own memory traffic is timed.
    let moves: Vec<(usize, W::Id, u64)> = (0..k)
        .map(|_| {
            let i = rng.index(n);
            (i, ids[i], rng.deadline())
        })
        .collect();
    let mut moved = Vec::with_capacity(k);
    let start = Instant::now();
    for &(_, id, d) in &moves {
        moved.push(w.reschedule(id, d));
    }
    f.reschedule = ns_per(start, k);
    busy += start.elapsed().as_nanos() as f64;
    for (&(i, _, _), id) in moves.iter().zip(moved) {
        ids[i] = id;
    }

    let mut out = Vec::with_capacity(1 << 16);
    let mut fired = 0usize;
    // Polls at multiples of 64 ms are timed on their own: they do every cascade from level
    // 1 and up (plus ordinary firing, subtracted below at the other polls' rate, and the
    // timer reads themselves, calibrated here).
    let calls = (HOUR_MS / 64) as usize;
    let t = Instant::now();
    let mut probe = 0u128;
    for _ in 0..calls {
        probe += black_box(Instant::now()).elapsed().as_nanos();
    }
    black_box(probe);
    let clock_ns = t.elapsed().as_nanos();
    let (mut t64, mut fired64) = (0u128, 0usize);
    let start = Instant::now();
    for now in 1..=HOUR_MS {
        if now % 64 == 0 {
            let t = Instant::now();
            w.poll(now, &mut out);
            t64 += t.elapsed().as_nanos();
            fired64 += out.len();
        } else {
            w.poll(now, &mut out);
        }
        fired += out.len();
        out.clear();
    }
    f.expire = ns_per(start, fired);
    let total_ns = start.elapsed().as_nanos();
    let fire_rate = (total_ns - t64) as f64 / (fired - fired64).max(1) as f64;
    let t64 = t64.saturating_sub(clock_ns) as f64;
    f.cascade = (t64 - fired64 as f64 * fire_rate).max(0.0) / fired as f64;
    busy += total_ns as f64;
    // Lazy deletion moves cancel/reschedule work into expiry, so compare whole rounds too.
    f.total = busy / n as f64;
    assert_eq!(fired, n, "every pending timer fires within the hour");
    drop(black_box(w));
    f
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn medians(rounds: &[Figures]) -> Figures {
    let pick = |g: fn(&Figures) -> f64| median(rounds.iter().map(g).collect());
    Figures {
        insert: pick(|f| f.insert),
        cancel: pick(|f| f.cancel),
        cancel_seq: pick(|f| f.cancel_seq),
        insert_steady: pick(|f| f.insert_steady),
        reschedule: pick(|f| f.reschedule),
        expire: pick(|f| f.expire),
        cascade: pick(|f| f.cascade),
        total: pick(|f| f.total),
        bytes: pick(|f| f.bytes),
    }
}

/// The memory floor: ns per 4-byte load at random positions of a 32 MB array (the size of the
/// 1 M-timer slab), as a dependent chain (latency: each address comes from the previous load,
/// like `ids[v]` -> entry) and as independent loads (what out-of-order overlap can reach).
fn memory_floor() -> (f64, f64) {
    const LEN: usize = 8 << 20;
    let mut rng = SplitMix(7);
    // Sattolo's shuffle: one cycle through every index, so the chase visits all of them.
    let mut next: Vec<u32> = (0..LEN as u32).collect();
    for i in (1..LEN).rev() {
        let j = rng.index(i);
        next.swap(i, j);
    }
    let loads = 2_000_000;
    let mut at = 0u32;
    let start = Instant::now();
    for _ in 0..loads {
        at = next[at as usize];
    }
    let chained = ns_per(start, loads);
    black_box(at);
    let idx: Vec<u32> = (0..loads).map(|_| rng.index(LEN) as u32).collect();
    let mut sum = 0u64;
    let start = Instant::now();
    for &i in &idx {
        sum += next[i as usize] as u64;
    }
    let independent = ns_per(start, loads);
    black_box(sum);
    (chained, independent)
}

fn main() {
    // `cargo bench` passes `--bench`; an optional number limits the sizes (e.g. for a quick run).
    let sizes: Vec<usize> = match std::env::args().skip(1).find_map(|a| a.parse().ok()) {
        Some(n) => vec![n],
        None => vec![1_000_000, 10_000_000],
    };
    println!(
        "timer wheel vs BinaryHeap (lazy deletion), deadlines uniform over 1 ms..1 h, \
         median of {ROUNDS} rounds"
    );
    println!(
        "size_of: wheel slab entry {} B incl. u64 payload (+ 4 B key per slot vector entry; \
         pinned by the wheel's tests), heap item {} B + slab {} B",
        32,
        std::mem::size_of::<Reverse<(u64, u32, u32)>>(),
        std::mem::size_of::<(u32, u64)>()
    );
    let floors: Vec<(f64, f64)> = (0..ROUNDS).map(|_| memory_floor()).collect();
    println!(
        "memory floor, random 4 B loads over 32 MB: {:.1} ns dependent, {:.1} ns independent",
        median(floors.iter().map(|f| f.0).collect()),
        median(floors.iter().map(|f| f.1).collect())
    );
    println!(
        "{:>10} {:<6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "pending",
        "impl",
        "insert",
        "cancel",
        "canc.seq",
        "ins.stdy",
        "resched",
        "expire",
        "(cascade)",
        "round",
        "B/timer"
    );
    for n in sizes {
        // Interleave the two structures round by round, so load from other processes hits
        // both alike.
        let mut rounds: (Vec<Figures>, Vec<Figures>) = (Vec::new(), Vec::new());
        for r in 0..ROUNDS {
            rounds.0.push(round::<Wheel<u64>>(n, 42 + r as u64));
            rounds.1.push(round::<LazyHeap>(n, 42 + r as u64));
        }
        let wheel = medians(&rounds.0);
        let heap = medians(&rounds.1);
        for (name, f) in [("wheel", wheel), ("heap", heap)] {
            println!(
                "{:>10} {:<6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                n,
                name,
                f.insert,
                f.cancel,
                f.cancel_seq,
                f.insert_steady,
                f.reschedule,
                f.expire,
                f.cascade,
                f.total,
                f.bytes
            );
        }
        println!(
            "{:>10} {:<6} {:>8.1}x {:>8.1}x {:>8.1}x {:>8.1}x {:>8.1}x {:>8.1}x {:>9} {:>8.1}x {:>8.2}x",
            n,
            "ratio",
            heap.insert / wheel.insert,
            heap.cancel / wheel.cancel,
            heap.cancel_seq / wheel.cancel_seq,
            heap.insert_steady / wheel.insert_steady,
            heap.reschedule / wheel.reschedule,
            heap.expire / wheel.expire,
            "",
            heap.total / wheel.total,
            heap.bytes / wheel.bytes,
        );
    }
    println!(
        "(ns per timer; round = all phases but canc.seq / N; (cascade) = share of expire spent \
         cascading; ratio = heap / wheel, > 1 means the wheel is faster or smaller)"
    );
}
