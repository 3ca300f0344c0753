//! Scheduling priority of the helper threads: background work runs under `SCHED_IDLE`, unless
//! the reactor has a core of its own.
//!
//! Why: without `--cpu` the helpers often run on the reactor's core (the scheduler places a
//! woken thread next to its waker, and a benchmark keeps the other cores busy), and at normal
//! priority a woken reactor does not reliably preempt them. EEVDF lets a task with unused lag
//! run on to the next tick (4 ms at 250 Hz), and on a `PREEMPT_NONE` kernel a long stretch of
//! kernel work (a page fault, the CPU part of an `fdatasync`) is not interrupted at all;
//! meanwhile the reactor, and every message it holds, waits. Any normal task that wakes
//! preempts a `SCHED_IDLE` one at once.
//!
//! The price is starvation when every core is busy, so the work someone waits for stays at
//! normal priority on the foreground lane of the [`StorageWorker`](super::StorageWorker):
//! strict-mode syncs, interval syncs that fell behind (records waited the whole
//! `--sync-timeout`, or 4 × `--sync-every` records are waiting), and the
//! pre-creation of a segment for a log that outran background pre-creation; and an interval
//! sync already queued on the background lane is superseded by a normal-priority one once
//! syncing falls behind (`log/jobs.rs`). (A thread cannot leave `SCHED_IDLE` again without
//! `CAP_SYS_NICE`, hence one thread per lane rather than one thread changing its policy per
//! job.)
//!
//! # With `--cpu`: normal priority
//!
//! Once the reactor is pinned and the helpers have other cores (`cpu.rs`), a helper never competes
//! with the reactor for a core, so `SCHED_IDLE` protects nothing, and it costs a priority
//! inversion. A background helper takes page locks of the active segment: an interval sync's
//! writeback locks its dirty pages (the partly written last page among them), as did a growth
//! step's prefetch the pages it read in, when growth steps still prefetched. If anything at normal
//! priority keeps the helpers' cores busy, the idle-class helper stops mid-way with those locks
//! held, and the
//! reactor's next `pwrite` to that page sleeps until the helper gets a core again. Measured
//! (e2e at 50 k msg/s, `corqd --cpu 0`, the generator spinning on core 1; `perf sched record
//! -g`): the reactor slept 20.5 ms in `pwrite` (`__filemap_get_folio` in
//! `ext4_da_write_begin`) while the background helper, preempted just after the reactor woke
//! it, waited 20 ms for core 1; e2e p99.99 10–20 ms. With the helpers at normal priority the
//! reactor did not sleep in a write in that run, and p99.99 fell to ~3 ms (the rest is the
//! hypervisor, see `docs/benchmarks.md`). The same starvation had also stopped interval
//! syncing: a starved background sync holds the log's one interval-sync slot, so at 200 k msg/s
//! the old build made 5 `fdatasync`s in 8 s where `--sync-every 2500` asks for 640 (now 465).
//! So with `--cpu` every helper started after the pin keeps normal priority. (Helpers started
//! before it, such as the checkpoint writer, stay idle-class: they hold no lock the reactor
//! takes.)
//!
//! Measured on the 2-core benchmark VM (`benches/figures.sh e2e`, after the pre-fault walk was
//! made page-by-page, see `segment.rs`): with the helpers at normal priority e2e p99 at
//! 50 k msg/s was 0.24–0.8 ms, with the two lanes 0.07–0.11 ms. Running every interval sync in
//! the background raised MPUB throughput further (2.1 M msg/s) but left 0.8 GB unsynced after
//! a 5 M-message burst, hence the catch-up rule; with it MPUB runs as before (~1.66 M msg/s).
//!
//! Linux only; elsewhere, or if the call fails, the thread keeps its priority.

/// Moves the calling thread (and threads it spawns later) to `SCHED_IDLE`, unless the reactor
/// is pinned with cores left for the helpers (see the module docs).
pub fn enter_background() {
    if crate::cpu::helpers_have_own_cores() {
        return;
    }
    go_idle();
}

/// Moves the calling thread (and threads it spawns later) to `SCHED_IDLE`.
fn go_idle() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is valid for SCHED_IDLE (static priority
    // 0). A failure only leaves the priority unchanged.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        ::log::debug!(
            "sched_setscheduler(SCHED_IDLE): {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The calling thread's scheduling policy.
#[cfg(test)]
pub fn current_policy() -> libc::c_int {
    // SAFETY: pid 0 is the calling thread; the call only reads.
    unsafe { libc::sched_getscheduler(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_calling_thread_goes_idle() {
        let before = current_policy();
        let in_helper = std::thread::spawn(|| {
            go_idle();
            current_policy()
        })
        .join()
        .unwrap();
        assert_eq!(in_helper, libc::SCHED_IDLE);
        assert_eq!(current_policy(), before, "the spawning thread is untouched");
    }
}
