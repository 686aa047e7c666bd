//! The compile worker. Compiling an untrusted component can take a lot of
//! time and memory (and wasmtime does not count a compile-time denial of
//! service as its bug), so weftd never compiles an upload in its own
//! process: it runs itself again as `weftd compile-module KIND IN OUT MIB
//! SECS`, which limits its own address space and CPU time, compiles, checks
//! the component against its world and writes the precompiled artefact. The
//! parent bounds the wall-clock time and kills it when that runs out.

use std::process::ExitCode;

use nix::sys::resource::{Resource, setrlimit};
use weft_wasm::{Kind, compile_untrusted};

/// The argument that selects the worker.
pub const ARG: &str = "compile-module";

/// Run the worker with the arguments after [`ARG`]. Exit 0: written; 2:
/// refused (the reason on stderr, one line).
pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let [kind, input, output, mib, secs] = args else {
        return Err(format!("usage: weftd {ARG} KIND INPUT OUTPUT MEMORY_MIB CPU_SECONDS"));
    };
    let kind = Kind::parse(kind).ok_or_else(|| format!("unknown kind {kind:?}"))?;
    let mib: u64 = mib.parse().map_err(|_| "bad memory limit".to_string())?;
    let secs: u64 = secs.parse().map_err(|_| "bad CPU limit".to_string())?;
    setrlimit(Resource::RLIMIT_AS, mib << 20, mib << 20).map_err(|e| format!("setting the memory limit: {e}"))?;
    setrlimit(Resource::RLIMIT_CPU, secs, secs).map_err(|e| format!("setting the CPU limit: {e}"))?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| format!("turning off core dumps: {e}"))?;
    let bytes = std::fs::read(input).map_err(|e| format!("reading {input}: {e}"))?;
    let artefact = compile_untrusted(kind, &bytes)?;
    std::fs::write(output, artefact).map_err(|e| format!("writing {output}: {e}"))
}
