//! Project tasks that are not plain `cargo build`: the Wasm components in
//! `policies/` are a separate workspace built for `wasm32-unknown-unknown`
//! and turned into components here (no WASI imports, so the host grants
//! nothing), and the full test suite needs them built first.
//!
//! `cargo xtask build-policies` — build every component into `target/modules/`,
//! and the test-only ones (hostile, and the Python and JavaScript examples in
//! `policies/examples/`) into `target/test-modules/`.
//! `cargo xtask test`           — build components and binaries, then run all tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The built-in components, by folder name under `policies/`.
const COMPONENTS: &[&str] = &["ipam-default", "naming-default", "policy-isolation", "policy-k8s"];
/// Hostile components for the sandbox tests, built into `target/test-modules/`
/// (never loaded as built-ins).
const HOSTILE: &[&str] = &["ipam-hostile", "naming-hostile", "policy-hostile"];
/// A component that imports WASI on purpose: built for wasm32-wasip2.
const WASI_IMPORTER: &str = "ipam-wasi";

/// The core-wasm target the guests are compiled for.
const GUEST_TARGET: &str = "wasm32-unknown-unknown";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root()?;
    match args.first().map(String::as_str) {
        Some("build-policies") => build_policies(&root),
        Some("test") => {
            build_policies(&root)?;
            run(Command::new(cargo()).current_dir(&root).args(["build", "--workspace", "--bins"]))?;
            let mut test = Command::new(cargo());
            test.current_dir(&root).args(["test", "--workspace", "--all-targets"]).args(&args[1..]);
            run_tests(&mut test)
        }
        _ => bail!("usage: cargo xtask build-policies | test [cargo test args]"),
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).context("xtask has no parent directory")
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Run `cargo test`, echoing its output, and close with one summary line
/// over every test binary (`tests: N passed, N failed`).
fn run_tests(cmd: &mut Command) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let (mut passed, mut failed) = (0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                for part in rest.split(';') {
                    let mut words = part.split_whitespace().rev();
                    let (Some(what), Some(n)) = (words.next(), words.next()) else {
                        continue;
                    };
                    let n: u64 = n.parse().unwrap_or(0);
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    Ok(())
}

fn build_policies(root: &Path) -> Result<()> {
    let policies = root.join("policies");
    run(Command::new(cargo()).current_dir(&policies).args(["build", "--release", "--target", GUEST_TARGET]))
        .context("building policies/ (is the target installed? `rustup target add wasm32-unknown-unknown`)")?;
    let out = root.join("target").join("modules");
    componentize_all(&policies, COMPONENTS, &out)?;
    componentize_all(&policies, HOSTILE, &root.join("target").join("test-modules"))?;
    run(Command::new(cargo()).current_dir(&policies).args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "-p",
        WASI_IMPORTER,
    ]))
    .context("building the WASI-importing test component (`rustup target add wasm32-wasip2`)")?;
    let wasi = policies.join("target/wasm32-wasip2/release").join(format!("{}.wasm", WASI_IMPORTER.replace('-', "_")));
    std::fs::copy(&wasi, root.join("target/test-modules").join(format!("{WASI_IMPORTER}.wasm")))
        .with_context(|| format!("copying {}", wasi.display()))?;
    build_examples(root)
}

/// A WIT folder for one world as the Python and JavaScript tools want it:
/// the world's package at the top, `weft:types` under `deps/`.
fn wit_dir(root: &Path, world: &str) -> Result<PathBuf> {
    let dir = root.join("target/example-wit").join(world);
    let deps = dir.join("deps/types");
    std::fs::create_dir_all(&deps)?;
    for (from, to) in [(root.join("wit").join(world), dir.clone()), (root.join("wit/types"), deps)] {
        for f in std::fs::read_dir(&from)?.flatten() {
            std::fs::copy(f.path(), to.join(f.file_name()))?;
        }
    }
    Ok(dir)
}

/// Whether `out` exists and is newer than every file in `inputs`.
fn fresh(out: &Path, inputs: &[PathBuf]) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = modified(out) else { return false };
    inputs.iter().all(|i| modified(i).is_some_and(|m| m <= built))
}

/// The example components in other languages, built with their own
/// toolchains (installed by `scripts/setup.sh`): Python with componentize-py
/// (`--stub-wasi`: every WASI import replaced by a trap, so the component
/// imports only its world) and JavaScript with componentize-js (every WASI
/// feature disabled, same effect). They are test modules, not built-ins.
fn build_examples(root: &Path) -> Result<()> {
    let examples = root.join("policies/examples");
    let out = root.join("target/test-modules");
    let py = examples.join("python-naming");
    let py_out = out.join("naming-python.wasm");
    if !fresh(&py_out, &[py.join("app.py"), root.join("wit/naming/naming.wit"), root.join("wit/types/types.wit")]) {
        let wit = wit_dir(root, "naming")?;
        run(Command::new("componentize-py")
            .current_dir(&py)
            .arg("-d")
            .arg(&wit)
            .args(["-w", "weft:naming/naming", "componentize", "--stub-wasi", "app", "-o"])
            .arg(&py_out))
        .context("building the Python example (is componentize-py installed? run scripts/setup.sh)")?;
    }
    println!("built {}", py_out.display());
    let js = examples.join("js-ipam");
    let js_out = out.join("ipam-js.wasm");
    if !fresh(&js_out, &[js.join("ipam.js"), root.join("wit/ipam/ipam.wit"), root.join("wit/types/types.wit")]) {
        let wit = wit_dir(root, "ipam")?;
        run(Command::new(js.join("node_modules/.bin/componentize-js"))
            .current_dir(&js)
            .arg("ipam.js")
            .arg("-w")
            .arg(&wit)
            .args(["-n", "weft:ipam/ipam", "-d", "stdio", "random", "clocks", "http", "fetch-event", "-o"])
            .arg(&js_out))
        .context("building the JavaScript example (run scripts/setup.sh: npm ci in policies/examples/js-ipam)")?;
    }
    println!("built {}", js_out.display());
    Ok(())
}

/// Turn each named core module into a component in `out`.
fn componentize_all(policies: &Path, names: &[&str], out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)?;
    for name in names {
        let core =
            policies.join("target").join(GUEST_TARGET).join("release").join(format!("{}.wasm", name.replace('-', "_")));
        let bytes = std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .module(&bytes)
            .with_context(|| format!("{name}: decoding core module"))?
            .validate(true)
            .encode()
            .with_context(|| format!("{name}: encoding component"))?;
        let dest = out.join(format!("{name}.wasm"));
        std::fs::write(&dest, &component)?;
        println!("built {} ({} bytes)", dest.display(), component.len());
    }
    Ok(())
}
