//! Each tenant's fair share of the sandbox: at most a few of one tenant's
//! uploaded components run at a time. Calls past that wait for a slot, up
//! to the wall-clock cap of a tenant call, and are then refused as busy.
//! Without it, one tenant's concurrent spinning calls hold as many of the
//! runtime's threads and the pool's instance slots as it sends requests;
//! with it they queue behind each other while every other tenant's calls,
//! and the operator's built-ins (never limited), go on.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A tenant's call slots.
#[derive(Debug)]
pub(crate) struct Slots {
    tenant: String,
    limit: usize,
    running: Mutex<usize>,
    freed: Condvar,
}

/// A call's refusal: the tenant's slots stayed full for `waited`.
#[derive(Debug, thiserror::Error)]
#[error(
    "tenant {tenant:?} already has {limit} Wasm call(s) running (its limit, weftd --tenant-wasm-concurrency); waited {waited:?}"
)]
pub(crate) struct Busy {
    tenant: String,
    limit: usize,
    waited: Duration,
}

/// A slot held for one call, given back on drop.
pub(crate) struct Held(Arc<Slots>);

impl Drop for Held {
    fn drop(&mut self) {
        let mut n = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        self.0.freed.notify_one();
    }
}

impl Slots {
    /// Take a slot, waiting up to `wait` for one.
    pub(crate) fn take(self: &Arc<Self>, wait: Duration) -> Result<Held, Busy> {
        let start = Instant::now();
        let mut n = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= self.limit {
            let left = wait.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Busy { tenant: self.tenant.clone(), limit: self.limit, waited: start.elapsed() });
            }
            n = self.freed.wait_timeout(n, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        *n += 1;
        Ok(Held(self.clone()))
    }
}

/// The slots of every tenant, made on first use.
#[derive(Debug)]
pub(crate) struct Share {
    limit: usize,
    tenants: Mutex<HashMap<String, Arc<Slots>>>,
}

impl Share {
    /// Each tenant gets `limit` (at least 1) concurrent calls.
    pub(crate) fn new(limit: usize) -> Share {
        Share { limit: limit.max(1), tenants: Mutex::new(HashMap::new()) }
    }

    /// `tenant`'s slots.
    pub(crate) fn of(&self, tenant: &str) -> Arc<Slots> {
        let mut t = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        t.entry(tenant.to_owned())
            .or_insert_with(|| {
                Arc::new(Slots {
                    tenant: tenant.to_owned(),
                    limit: self.limit,
                    running: Mutex::new(0),
                    freed: Condvar::new(),
                })
            })
            .clone()
    }
}

/// The default limit: half the machine's cores, at least one. An honest
/// call takes microseconds, so queueing one tenant's calls costs it
/// nothing; a spinning one then holds a core at most (and that at
/// SCHED_IDLE, see `cpu.rs`).
pub fn default_limit() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get() / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_runs_at_most_its_limit_and_others_are_not_held() {
        let share = Share::new(2);
        let a = share.of("a");
        let (one, two) = (a.take(Duration::ZERO).unwrap(), a.take(Duration::ZERO).unwrap());
        let e = a.take(Duration::from_millis(20)).err().unwrap();
        assert!(e.to_string().starts_with("tenant \"a\" already has 2 Wasm call(s) running"), "{e}");
        assert!(e.waited >= Duration::from_millis(20));
        let _b = share.of("b").take(Duration::ZERO).expect("another tenant's slots are its own");
        // A slot given back wakes a waiter.
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || a.take(Duration::from_secs(5)).map(drop).is_ok())
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(one);
        assert!(waiter.join().unwrap());
        drop(two);
        assert_eq!(*a.running.lock().unwrap(), 0);
    }
}
