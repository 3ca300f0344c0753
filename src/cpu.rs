//! Which cores corq's threads run on. `--cpu N` gives core N to the reactor, and the helper
//! threads (storage lanes, checkpoint writer, auth, resolvers, lookupd queries, webhook) then
//! run on the process's other allowed cores, never on N. With one allowed core nothing moves.
//!
//! Why the helpers leave the reactor's core: `SCHED_IDLE` (see `storage/priority.rs`) makes a
//! woken reactor preempt a helper, but it does not stop a helper from taking the core from a
//! reactor that is *running*. Under EEVDF a task that has run for a while is not eligible at
//! a tick, and then the only eligible task runs, idle policy or not, until it blocks or the
//! next tick. Measured (`perf record -e sched:sched_switch -C 0` during `benches/ops-turns.sh`,
//! 10 GB backlog): the checkpoint writer ran 3.75 ms on core 0 while the reactor, mid-turn,
//! waited runnable; that turn took 8.0 ms, and the same window showed 13 ms turns in two of
//! three runs. A user who pins the reactor wants its core to itself.
//!
//! Once helpers have cores of their own, background helpers keep normal priority: an
//! idle-class helper starved on those cores while holding a page lock stalled the reactor for
//! 20 ms (see `storage/priority.rs`).
//!
//! Helpers are started by [`spawn_helper`] and tracked by thread id, not found through `/proc/self/task`,
//! so an application that embeds the server never has its own threads moved.

use std::sync::Mutex;

/// The helper threads alive now, and the cores they must use once the reactor is pinned.
struct Helpers {
    tids: Vec<libc::pid_t>,
    cpus: Option<libc::cpu_set_t>,
}

static HELPERS: Mutex<Helpers> = Mutex::new(Helpers {
    tids: Vec::new(),
    cpus: None,
});

/// Starts a helper thread named `name`, registered as a helper for its whole life: every
/// thread the server starts goes through here, so none can stay on the reactor's core.
///
/// # Errors
/// As [`std::thread::Builder::spawn`].
pub fn spawn_helper<F, T>(name: &str, f: F) -> std::io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _helper = helper_thread();
            f()
        })
}

/// Registers the calling thread as a helper until the guard drops: it moves off the
/// reactor's core now if the reactor is pinned, or when it is pinned later.
#[must_use = "the thread counts as a helper until the guard drops"]
fn helper_thread() -> HelperGuard {
    helper_thread_in(&HELPERS)
}

/// As [`helper_thread`], in the given registry (the process's, or a test's own).
fn helper_thread_in(registry: &'static Mutex<Helpers>) -> HelperGuard {
    let tid = current_tid();
    let mut h = lock(registry);
    h.tids.push(tid);
    if let Some(cpus) = &h.cpus {
        set_affinity(0, cpus);
    }
    HelperGuard { tid, registry }
}

/// While alive, the thread that made it is a registered helper.
struct HelperGuard {
    tid: libc::pid_t,
    registry: &'static Mutex<Helpers>,
}

impl Drop for HelperGuard {
    fn drop(&mut self) {
        // The id may be reused by another thread once this one ends: forget it first.
        lock(self.registry).tids.retain(|&t| t != self.tid);
    }
}

/// Pins the calling thread (the reactor) to `cpu`, and moves every helper, present and
/// future, to the other cores the process may use (if there are any).
///
/// # Errors
/// If the calling thread cannot be pinned (e.g. `cpu` is not allowed); helpers are then left
/// where they are.
pub fn pin_reactor(cpu: usize) -> std::io::Result<()> {
    pin_reactor_in(&HELPERS, cpu)
}

/// As [`pin_reactor`], moving the helpers of the given registry. (Tests use their own, so the
/// process-wide state that [`helpers_have_own_cores`] reports stays as the other tests of the
/// process expect.)
fn pin_reactor_in(registry: &'static Mutex<Helpers>, cpu: usize) -> std::io::Result<()> {
    let allowed = affinity(0)?;
    // SAFETY: cpu_set_t is plain data; CPU_CLR/CPU_COUNT bounds-check `cpu`.
    let (others, any_other) = unsafe {
        let mut others = allowed;
        libc::CPU_CLR(cpu, &mut others);
        (others, libc::CPU_COUNT(&others) > 0)
    };
    pin_current_thread(cpu)?;
    if any_other {
        let mut h = lock(registry);
        for &tid in &h.tids {
            set_affinity(tid, &others);
        }
        h.cpus = Some(others);
    }
    Ok(())
}

/// Pins the calling thread to `cpu`, and nothing else: no helper moves (for a program that
/// places its own threads, such as the floor benchmarks).
///
/// # Errors
/// If the kernel refuses (e.g. `cpu` is not allowed).
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks `cpu`.
    let only = unsafe {
        let mut only: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut only);
        only
    };
    if set_affinity(0, &only) {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether helpers are kept off the reactor's core: the reactor is pinned and the process may
/// use at least one other core. Then a helper never competes with the reactor for a core, so
/// `SCHED_IDLE` has nothing left to protect (see `storage/priority.rs`).
pub fn helpers_have_own_cores() -> bool {
    lock(&HELPERS).cpus.is_some()
}

fn lock(registry: &'static Mutex<Helpers>) -> std::sync::MutexGuard<'static, Helpers> {
    // A panic while holding the lock leaves plain data behind: still usable.
    registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn current_tid() -> libc::pid_t {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    libc::pid_t::try_from(tid).unwrap_or(0)
}

/// The cores thread `tid` (0: the caller) may run on.
fn affinity(tid: libc::pid_t) -> std::io::Result<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data, and the size passed is its own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(set)
    }
}

/// Sets thread `tid`'s (0: the caller's) cores; false if the kernel refused (e.g. the thread
/// has ended: harmless).
fn set_affinity(tid: libc::pid_t, set: &libc::cpu_set_t) -> bool {
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// This test's own registry: pinning through the process's would change the priority the
    /// other tests' helper threads get (see `helpers_have_own_cores`).
    static TEST_HELPERS: Mutex<Helpers> = Mutex::new(Helpers {
        tids: Vec::new(),
        cpus: None,
    });

    fn cpus_of_caller() -> Vec<usize> {
        let set = affinity(0).expect("sched_getaffinity");
        // SAFETY: CPU_ISSET bounds-checks against the set's size.
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    }

    #[test]
    fn pinning_the_reactor_moves_helpers_before_and_after_it_off_its_core() {
        let allowed = cpus_of_caller();
        if allowed.len() < 2 {
            eprintln!("one allowed core: nothing to move, nothing to check");
            return;
        }
        let reactor_cpu = allowed[0];
        // A helper that exists before the pin, asked for its cores after it.
        let (ask, asked) = mpsc::channel::<()>();
        let (tell, told) = mpsc::channel();
        let early = std::thread::spawn(move || {
            let _helper = helper_thread_in(&TEST_HELPERS);
            tell.send(()).unwrap();
            asked.recv().unwrap();
            cpus_of_caller()
        });
        told.recv().unwrap();
        pin_reactor_in(&TEST_HELPERS, reactor_cpu).expect("pin");
        assert_eq!(cpus_of_caller(), [reactor_cpu], "the reactor's thread");
        ask.send(()).unwrap();
        let early_cpus = early.join().unwrap();
        assert!(!early_cpus.is_empty() && !early_cpus.contains(&reactor_cpu));

        // A helper spawned by the pinned thread inherits its core, then leaves it.
        let late = std::thread::spawn(|| {
            let inherited = cpus_of_caller();
            let _helper = helper_thread_in(&TEST_HELPERS);
            (inherited, cpus_of_caller(), current_tid())
        });
        let (inherited, moved, tid) = late.join().unwrap();
        assert_eq!(inherited, [reactor_cpu]);
        assert!(
            !moved.is_empty() && !moved.contains(&reactor_cpu),
            "{moved:?}"
        );
        // An ended helper is forgotten (its id may be reused by a thread that is no helper).
        assert!(!lock(&TEST_HELPERS).tids.contains(&tid));
        assert!(
            !helpers_have_own_cores(),
            "the process's registry is untouched"
        );
    }

    #[test]
    fn an_impossible_core_is_an_error_and_moves_nothing() {
        let err = pin_reactor_in(&TEST_HELPERS, libc::CPU_SETSIZE as usize - 1);
        assert!(err.is_err(), "a core this machine does not have");
    }
}
