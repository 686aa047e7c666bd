//! The drift watcher: kernel notifications (rtnetlink links and
//! addresses, nf_tables generations by other processes) are gathered for a
//! moment — a flushed table or a deleted bridge arrives as a burst — and
//! handed to [`Ctl::repair_drift`], which repairs only weft's own objects.
//! The periodic reconcile pass stays as the backstop for anything missed.

use std::sync::Arc;
use std::time::Duration;

use crate::controller::Ctl;

/// How long a burst of notifications is gathered before repairing.
const GATHER: Duration = Duration::from_millis(20);

/// Start the watcher; it runs until weftd stops.
pub fn spawn(ctl: Arc<Ctl>) -> Result<tokio::task::JoinHandle<()>, weft_kernel::KernelError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    weft_kernel::watch::start(tx)?;
    Ok(tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            tokio::time::sleep(GATHER).await;
            let mut batch = vec![first];
            while let Ok(e) = rx.try_recv() {
                batch.push(e);
            }
            ctl.repair_drift(batch).await;
        }
    }))
}
