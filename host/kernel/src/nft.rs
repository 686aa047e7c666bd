//! nftables transactions. A script given to `nft -f` is applied as one
//! atomic transaction: either all of it takes effect or none does.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::KernelError;

/// Apply `script` atomically.
pub async fn apply(script: &str) -> Result<(), KernelError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            KernelError::new("nft -f", "inet weft", format!("cannot run nft (is nftables installed?): {e}"))
        })?;
    if let Some(pid) = child.id() {
        // Its commit is weft's own: the drift watcher must not repair it.
        crate::watch::note_own_pid(pid);
    }
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await.map_err(|e| KernelError::new("nft -f", "inet weft", e))?;
    }
    let out = child.wait_with_output().await.map_err(|e| KernelError::new("nft -f", "inet weft", e))?;
    if !out.status.success() {
        return Err(KernelError::new("nft -f", "inet weft", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}
