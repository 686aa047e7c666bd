//! Engine configuration: pooling allocator, epoch interruption, no
//! component-model async (it made every call ~2.5x dearer here).

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::limits;

/// Build the engine all weft components run on.
pub fn build() -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(limits::POOL_COMPONENT_INSTANCES)
        .total_core_instances(limits::POOL_CORE_INSTANCES)
        .total_memories(limits::POOL_MEMORIES)
        .total_tables(limits::POOL_TABLES)
        .max_memory_size(limits::MAX_MEMORY_BYTES);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(limits::MAX_WASM_STACK)
        .wasm_component_model(true)
        // Bounds checks instead of 4 GiB reservations per memory slot keep
        // the pool's virtual footprint small.
        .memory_reservation(limits::MAX_MEMORY_BYTES as u64)
        .memory_guard_size(64 << 10)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Advance the engine's epoch forever on a background thread.
pub fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    let _ = std::thread::Builder::new().name("weft-epoch".into()).spawn(move || {
        loop {
            std::thread::sleep(limits::EPOCH_TICK);
            match weak.upgrade() {
                Some(e) => e.increment_epoch(),
                None => return,
            }
        }
    });
}
