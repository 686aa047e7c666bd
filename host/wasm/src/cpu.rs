//! Tenant code gets the CPU nobody else wants.
//!
//! A tenant's component may spin to its deadline on every call; the
//! deadline bounds how long, not how much of a core it takes meanwhile. On a
//! small host that core is the one another tenant's attach needs. Two
//! measures, both only for tenant-uploaded components (built-ins are
//! weft's own code and run as they are):
//!
//! - while the call runs, its thread is switched to `SCHED_IDLE`: the
//!   scheduler runs it only when no ordinary thread wants the CPU, and an
//!   ordinary thread that wakes preempts it at once (nice 10 was tried
//!   first: weight 110 against 1,024 left the other tenant's p99 at ~2.7×).
//!   The policy is put back when the call returns, before the store (and
//!   its pooled instance) is released;
//! - past [`limits::TENANT_FREE_CPU`] of CPU time, a call is throttled to
//!   1/[`limits::TENANT_SHARE`] of a core (the epoch callback sleeps until
//!   wall-clock time has caught up), and its deadline is counted in the CPU
//!   time it used, so an honest but heavy call still completes. Even an
//!   idle-class thread that never stops running slows everyone else on a
//!   small VM (measured on this 2-core machine: an outside `SCHED_IDLE`
//!   busy loop took another process's attach p50 from 3.2 to 6.0 ms; weft's
//!   spinning tenant call without the throttle, to ~4.7 ms), so a runaway
//!   guest must also let go of the core.
//!
//! Putting the policy back must not fail, or a runtime worker would stay
//! idle-class for good; so the switch is used only after a scratch thread
//! has shown, once per process, that it can go down and come back.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use crate::limits;

/// Give `store` its deadline: for a built-in, a trap after
/// [`limits::CALL_DEADLINE_TICKS`] of wall-clock time; for a tenant's
/// component, [`limits::deadline`] of the calling thread's CPU time (or
/// [`limits::TENANT_WALL_CAP`]), with the throttle described above.
pub(crate) fn arm<T: 'static>(store: &mut Store<T>, tenant: bool) {
    if !tenant {
        store.set_epoch_deadline(limits::CALL_DEADLINE_TICKS);
        store.epoch_deadline_trap();
        return;
    }
    let (start, cpu0) = (Instant::now(), thread_cpu());
    // Look at every tick: the callback is cheap next to a 2 ms tick.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        let (wall, cpu) = (start.elapsed(), thread_cpu().saturating_sub(cpu0));
        if cpu >= limits::deadline() || wall >= limits::TENANT_WALL_CAP {
            return Ok(UpdateDeadline::Interrupt);
        }
        if let Some(over) = cpu.checked_sub(limits::TENANT_FREE_CPU) {
            let due = limits::TENANT_FREE_CPU + over * limits::TENANT_SHARE;
            if let Some(wait) = due.checked_sub(wall) {
                std::thread::sleep(wait.min(limits::TENANT_WALL_CAP - wall));
            }
        }
        Ok(UpdateDeadline::Continue(1))
    });
}

/// CPU time the calling thread has used.
pub(crate) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid pointer to a local; the clock always exists on Linux.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A thread switched to `SCHED_IDLE` until this is dropped.
pub(crate) struct Lowered {
    prev: Option<(libc::c_int, libc::sched_param)>,
}

impl Lowered {
    /// Switch the calling thread to `SCHED_IDLE` if `tenant` (and if the
    /// host allows coming back); otherwise do nothing.
    pub(crate) fn tenant(tenant: bool) -> Lowered {
        if !tenant || !can_restore() {
            return Lowered { prev: None };
        }
        Lowered { prev: lower() }
    }
}

impl Drop for Lowered {
    fn drop(&mut self) {
        if let Some((policy, param)) = self.prev.take() {
            // SAFETY: plain syscall on the calling thread (pid 0).
            #[allow(unsafe_code)]
            let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
            if rc != 0 {
                tracing::error!(
                    error = %std::io::Error::last_os_error(),
                    "could not restore a thread's scheduling policy after a tenant call"
                );
            }
        }
    }
}

/// Switch the calling thread to `SCHED_IDLE`; the policy it had, if it was
/// an ordinary one and the switch worked.
fn lower() -> Option<(libc::c_int, libc::sched_param)> {
    // SAFETY: plain syscalls on the calling thread (pid 0) with valid
    // pointers to a local.
    #[allow(unsafe_code)]
    unsafe {
        let policy = libc::sched_getscheduler(0);
        if policy != libc::SCHED_OTHER && policy != libc::SCHED_BATCH {
            return None;
        }
        let mut param: libc::sched_param = std::mem::zeroed();
        if libc::sched_getparam(0, &mut param) != 0 {
            return None;
        }
        let idle = libc::sched_param { sched_priority: 0 };
        (libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) == 0).then_some((policy, param))
    }
}

/// The calling thread's scheduling policy.
pub(crate) fn policy() -> libc::c_int {
    // SAFETY: plain syscall on the calling thread.
    #[allow(unsafe_code)]
    unsafe {
        libc::sched_getscheduler(0)
    }
}

/// Whether a thread of this process can go to `SCHED_IDLE` and back (tried
/// once, on a scratch thread).
pub(crate) fn can_restore() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        std::thread::spawn(|| {
            let before = policy();
            let lowered = Lowered { prev: lower() };
            if lowered.prev.is_none() {
                return false;
            }
            drop(lowered);
            policy() == before
        })
        .join()
        .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_call_runs_idle_class_and_comes_back() {
        std::thread::spawn(|| {
            // SAFETY: a plain syscall.
            #[allow(unsafe_code)]
            let root = unsafe { libc::geteuid() } == 0;
            assert!(can_restore() || !root, "root can always go to SCHED_IDLE and back");
            let before = policy();
            {
                let _g = Lowered::tenant(true);
                if can_restore() {
                    assert_eq!(policy(), libc::SCHED_IDLE);
                }
            }
            assert_eq!(policy(), before);
            {
                let _g = Lowered::tenant(false);
                assert_eq!(policy(), before, "built-ins keep their thread's policy");
            }
        })
        .join()
        .unwrap();
    }
}
