//! The README's walk-through, run as written: its shell block, verbatim,
//! in a scratch directory inside fresh network and mount namespaces (so its
//! `weftd`, its `ip netns add c1` and its 127.0.0.1:7443 are the test's
//! own and vanish with it).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use weft_tests::bin_dir;

/// The ```sh block after `marker` in the README.
fn block_after(marker: &str) -> String {
    let readme = include_str!("../../README.md");
    let rest = &readme[readme.find(marker).unwrap_or_else(|| panic!("README has no {marker:?}"))..];
    let start = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    rest[start..][..rest[start..].find("\n```").expect("the block's end")].to_owned()
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
