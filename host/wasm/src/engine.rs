//! Engine configuration: pooling allocator, epoch interruption, no
//! component-model async (it made every call ~2.5x dearer here).

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::limits;

/// Build the engine all weft components run on.
pub fn build() -> wasmtime::Result<Engine> {
    let mut config = config();
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(limits::POOL_COMPONENT_INSTANCES)
        .total_core_instances(limits::POOL_CORE_INSTANCES)
        .total_memories(limits::POOL_MEMORIES)
        .total_tables(limits::POOL_TABLES)
        .max_memory_size(limits::MAX_MEMORY_BYTES);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// The engine a compile worker uses: the same code-generation settings as
/// [`build`] (so its artefacts load there), without the pooling allocator's
/// large virtual reservation, which an address-space limit would refuse.
pub fn build_for_compile() -> wasmtime::Result<Engine> {
    Engine::new(&config())
}

/// Settings shared by the running and the compiling engine.
fn config() -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(limits::MAX_WASM_STACK)
        .wasm_component_model(true)
        // Bounds checks instead of 4 GiB reservations per memory slot keep
        // the pool's virtual footprint small.
        .memory_reservation(limits::MAX_MEMORY_BYTES as u64)
        .memory_guard_size(64 << 10);
    config
}

/// Load an artefact written by [`crate::compile_untrusted`].
#[allow(unsafe_code)]
pub fn deserialize(engine: &Engine, path: &std::path::Path) -> wasmtime::Result<wasmtime::component::Component> {
    // SAFETY: wasmtime requires that deserialized bytes come from its own
    // `serialize`, because they are machine code loaded as is. weftd only
    // calls this on files its own compile worker wrote into its state
    // directory (named by the sha256 of the source component), never on
    // bytes a client sent; wasmtime itself refuses artefacts of another
    // version or configuration, after which weftd compiles the source again.
    unsafe { wasmtime::component::Component::deserialize_file(engine, path) }
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
