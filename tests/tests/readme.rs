//! The README's walk-through, run as written: its shell block, verbatim,
//! in a scratch directory inside fresh network and mount namespaces (so its
//! `weftd`, its `ip netns add c1` and its 127.0.0.1:7443 are the test's
//! own and vanish with it).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use weft_tests::bin_dir;

/// The ```sh block after `marker` in the README.
fn block_after(marker: &str) -> String {
    weft_tests::block_after(include_str!("../../README.md"), marker, "sh")
}

#[test]
fn the_tenant_walkthrough_runs_as_written() {
    let block = block_after("From certificate to first attach");
    let dir = std::env::temp_dir().join(format!("weft-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "set -euo pipefail\n\
         trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT\n\
         mount -t tmpfs weft-readme /run/netns\n\
         ip link set lo up\n\
         cd {dir}\n\
         export PATH={bin}:$PATH\n\
         {block}\n",
        dir = dir.display(),
        bin = bin_dir().display(),
    );
    std::fs::create_dir_all("/run/netns").unwrap();
    let out = Command::new("timeout")
        .args(["120", "unshare", "--mount", "--net", "--propagation", "private", "bash", "-c", &script])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the walk-through failed:\n{stdout}\n{stderr}");
    let row = |k: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(k))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
    };
    assert_eq!(row("networks"), Some(vec!["networks", "1", "4"]), "{stdout}");
    assert_eq!(row("endpoints"), Some(vec!["endpoints", "1", "64"]), "{stdout}");
    assert!(
        stderr.contains("weft::audit: audit caller=spiffe://weft.example/tenant/acme role=tenant"),
        "weftd's audit line names the certificate:\n{stderr}"
    );
}

#[test]
fn the_install_runs_as_written() {
    let block = block_after("To install weft as a system service");
    let scratch = weft_tests::ScratchDir::new("install");
    let t = scratch.0.display();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().display().to_string();
    // The system directories the install writes are copy-on-write overlays
    // in a private mount namespace: the machine's stay as they are.
    let script = format!(
        "set -euo pipefail\n\
         trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT\n\
         mount -t tmpfs weft-install {t}\n\
         for d in /usr/local /opt /etc /run /var; do\n\
           mkdir -p {t}/upper$d {t}/work$d\n\
           mount -t overlay weft-install -o lowerdir=$d,upperdir={t}/upper$d,workdir={t}/work$d $d\n\
         done\n\
         ip link set lo up\n\
         export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin\n\
         cd {repo}\n\
         {block}\n\
         test ! -e /usr/local/bin/weftd && test ! -e /opt/cni/bin/weft && test ! -e /etc/systemd/system/weftd.service\n\
         echo uninstalled\n"
    );
    let out = Command::new("timeout")
        .args(["120", "unshare", "--mount", "--net", "--propagation", "private", "bash", "-c", &script])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the install failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("weft installed from target/"), "{stdout}");
    let bridge = stdout.lines().find(|l| l.starts_with("bridge ")).unwrap_or_else(|| panic!("{stdout}\n{stderr}"));
    assert!(bridge.contains("172.17.0.0/16"), "{bridge}");
    assert!(stderr.contains("default network created"), "{stderr}");
    assert!(stdout.trim_end().ends_with("uninstalled"), "{stdout}");
}

#[test]
fn the_installed_files_hold_together() {
    let unit = include_str!("../../scripts/install/weftd.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/weftd --config /etc/weft/weftd.toml"), "{unit}");
    let conflist: serde_json::Value =
        serde_json::from_str(include_str!("../../scripts/install/10-weft.conflist")).unwrap();
    assert_eq!(conflist["plugins"][0]["type"], "weft");
    assert_eq!(conflist["plugins"][0]["network"], "bridge", "the default network of weftd.toml");
    let toml = include_str!("../../scripts/install/weftd.toml");
    assert!(toml.contains("[default_network]\nname = \"bridge\"\nsubnets = [\"172.17.0.0/16\"]"), "{toml}");
}
