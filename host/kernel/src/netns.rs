//! Running netlink operations inside a container's network namespace. A
//! netlink socket belongs to the namespace it was opened in, so a short-lived
//! OS thread enters the namespace (`setns`), opens its own socket there, runs
//! the ops on a current-thread runtime and exits. Pooled tokio threads never
//! change namespace.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use tokio::sync::oneshot;
use weft_plan::Op;

use crate::error::KernelError;
use crate::netlink::Netlink;

/// Check that `path` is a network namespace file other than weftd's own,
/// without changing anything, and return the namespace's identity (its
/// nsfs inode). The kernel's answer to `NS_GET_NSTYPE` is the proof: no
/// thread has to enter the namespace to find out.
pub async fn check_netns(path: &Path) -> Result<u64, KernelError> {
    open_netns(path).map(|(_, ino)| ino)
}

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: the `CLONE_NEW*` type of an nsfs
/// file.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Open `path` as a network namespace. Never blocks (a FIFO or a device
/// given as the path must not hang the caller: opened non-blocking, then
/// asked for its namespace type, which only an nsfs file answers), and
/// refuses weftd's own namespace: an endpoint there would put links and a
/// default route into the host. Returns the file and its nsfs inode.
fn open_netns(path: &Path) -> Result<(File, u64), KernelError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| KernelError::new("open netns", path.display(), e))?;
    // SAFETY: an ioctl without an argument on a descriptor this function owns.
    #[allow(unsafe_code)]
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if kind != libc::CLONE_NEWNET {
        return Err(KernelError::new("open netns", path.display(), "not a network namespace"));
    }
    let meta = file.metadata().map_err(|e| KernelError::new("stat netns", path.display(), e))?;
    if Some((meta.dev(), meta.ino())) == own_netns() {
        return Err(KernelError::new("open netns", path.display(), "is weftd's own network namespace"));
    }
    Ok((file, meta.ino()))
}

/// The (device, inode) of weftd's own network namespace, read once: the
/// process never leaves it (only short-lived threads enter others).
fn own_netns() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    static OWN: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| std::fs::metadata("/proc/self/ns/net").ok().map(|m| (m.dev(), m.ino())))
}

/// An endpoint's interface as seen inside its namespace: the link (None if
/// missing) and which families have a default route there.
pub async fn observe_inside(path: &Path, ifname: &weft_model::IfName) -> Result<crate::Inside, KernelError> {
    let ifname = ifname.clone();
    on_ns_thread(path.to_path_buf(), move |nl| async move {
        let link = nl.observe(&ifname).await?;
        let default_v4 = nl.has_default_route(true).await?;
        let default_v6 = nl.has_default_route(false).await?;
        Ok(crate::Inside { link, default_v4, default_v6 })
    })
    .await?
}

/// Run `ops` inside the namespace at `path`. On failure, returns how many
/// ops succeeded and the error.
pub async fn run_in(path: PathBuf, ops: Vec<Op>) -> Result<(), (usize, KernelError)> {
    let result = on_ns_thread(path, move |nl| async move {
        for (done, op) in ops.iter().enumerate() {
            let r = match op {
                Op::Sysctl { key, value, .. } => crate::write_sysctl(key, value),
                other => nl.apply(other).await,
            };
            r.map_err(|e| (done, e))?;
        }
        Ok(())
    })
    .await;
    match result {
        Ok(inner) => inner,
        Err(e) => Err((0, e)),
    }
}

/// Enter the namespace at `path` on a fresh thread, open netlink there and
/// run `f`. The thread exits afterwards, so the namespace switch never leaks.
async fn on_ns_thread<F, Fut, T>(path: PathBuf, f: F) -> Result<T, KernelError>
where
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("weft-netns".into())
        .spawn(move || {
            let run = || -> Result<T, KernelError> {
                let (file, _) = open_netns(&path)?;
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| KernelError::new("setns", path.display(), format!("not a network namespace ({e})")))?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| KernelError::new("runtime", path.display(), e))?;
                rt.block_on(async move {
                    let nl = Netlink::open()?;
                    Ok(f(nl).await)
                })
            };
            let _ = tx.send(run());
        })
        .map_err(|e| KernelError::new("spawn netns thread", &shown, e))?;
    rx.await.map_err(|_| KernelError::new("netns thread", &shown, "thread ended without answering"))?
}
