//! Project tasks that are not plain `cargo build`: the Wasm components in
//! `policies/` are a separate workspace built for `wasm32-unknown-unknown`
//! and turned into components here (no WASI imports, so the host grants
//! nothing), and the full test suite needs them built first.
//!
//! `cargo xtask build-policies` — build every component into `target/modules/`.
//! `cargo xtask test`           — build components and binaries, then run all tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The built-in components, by folder name under `policies/`.
const COMPONENTS: &[&str] = &["ipam-default", "naming-default", "policy-isolation", "policy-k8s"];
/// Hostile components for the sandbox tests, built into `target/test-modules/`
/// (never loaded as built-ins).
const HOSTILE: &[&str] = &["ipam-hostile"];
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
