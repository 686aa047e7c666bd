//! Every sandbox limit in one place, with the reason for its value.

use std::time::Duration;

/// How often the engine's epoch advances. Deadlines are counted in ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Ticks a single decision call may run: 50 × 2 ms = 100 ms. An IPAM call
/// takes microseconds; anything near this is a runaway guest.
pub const CALL_DEADLINE_TICKS: u64 = 50;
/// CPU time a call into a tenant's component spends at full speed, far
/// more than any honest decision takes.
pub const TENANT_FREE_CPU: Duration = Duration::from_millis(10);
/// Past that, a tenant's call gets at most 1/`TENANT_SHARE` of a core: it
/// is made to sleep until its wall-clock time is `TENANT_SHARE` times its
/// CPU time (see `cpu`). Its deadline is counted in CPU time, so honest
/// heavy work still finishes, only later.
pub const TENANT_SHARE: u32 = 4;
/// Wall-clock time after which a tenant's call is stopped whatever CPU it
/// got (an idle-class thread on a busy host may get none).
pub const TENANT_WALL_CAP: Duration = Duration::from_secs(1);
/// Linear memory a guest may grow to. Decision components need little; a
/// guest that grows past this traps instead of taking host memory.
pub const MAX_MEMORY_BYTES: usize = 64 << 20;
/// Wasm stack per call; deep recursion traps instead of overflowing.
pub const MAX_WASM_STACK: usize = 512 << 10;
/// Component and core instances one store may create. A Rust component is a
/// handful; a Python one (componentize-py: CPython, libc, its WASI stubs)
/// needs about 40.
pub const MAX_INSTANCES: usize = 64;
/// Tables per store.
pub const MAX_TABLES: usize = 32;
/// Memories per store.
pub const MAX_MEMORIES: usize = 8;
/// Concurrent component instances across the pooling allocator.
pub const POOL_COMPONENT_INSTANCES: u32 = 256;
/// Concurrent core instances across the pool.
pub const POOL_CORE_INSTANCES: u32 = 1024;
/// Concurrent linear memories across the pool.
pub const POOL_MEMORIES: u32 = 512;
/// Concurrent tables across the pool.
pub const POOL_TABLES: u32 = 1024;

/// The limits of one store: memory cap (growth past it traps), instances,
/// tables and memories.
pub fn store_limits() -> wasmtime::StoreLimits {
    wasmtime::StoreLimitsBuilder::new()
        .memory_size(MAX_MEMORY_BYTES)
        .instances(MAX_INSTANCES)
        .tables(MAX_TABLES)
        .memories(MAX_MEMORIES)
        .trap_on_grow_failure(true)
        .build()
}

/// The whole call's deadline.
pub fn deadline() -> Duration {
    EPOCH_TICK * CALL_DEADLINE_TICKS as u32
}

/// The deadline in milliseconds, for messages.
pub fn deadline_ms() -> u64 {
    deadline().as_millis() as u64
}
