//! weftd: the weft network controller daemon. Wiring only: parse flags, set
//! up logging, open the store, load the built-in components, reconcile, and
//! serve the gRPC API until SIGTERM/SIGINT. Kernel state is left in place on
//! exit so containers keep networking while weftd restarts.

mod admit;
mod change;
mod cluster;
mod commit;
mod config;
mod config_file;
mod controller;
mod decide;
mod drift;
mod events;
mod index;
mod locks;
mod metrics;
mod modules;
mod quota;
mod reconcile;
mod record;
mod retire;
mod timings;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use anyhow::Context;
use tracing::{info, warn};
use weft_model::access::SharedAccess;

fn main() -> anyhow::Result<std::process::ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(worker::ARG) {
        return Ok(worker::main(&args[2..]));
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve())?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn serve() -> anyhow::Result<()> {
    let (cfg, access) = config::Config::load()?;
    let filter = || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter()).with_writer(std::io::stderr);
    if cfg.log_format == "json" {
        fmt.json().flatten_event(true).init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
    let access = Arc::new(SharedAccess::new(access));
    let metrics_listener = match cfg.metrics_listen {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    let ctl = Arc::new(controller::Ctl::start(&cfg, access.clone()).await.context("starting weftd")?);
    if let Some(req) = cfg.default_network.clone() {
        ctl.ensure_default_network(req).await;
    }
    let periodic = reconcile::spawn_periodic(ctl.clone(), cfg.reconcile_interval());
    let sync = ctl.cluster.clone().map(|c| cluster::sync::spawn(ctl.clone(), c));
    let watcher = drift::spawn(ctl.clone()).context("starting the drift watcher")?;
    let reload = spawn_reload(&cfg, access.clone())?;
    let mut listeners = cfg.listeners();
    let metrics = metrics_listener.map(|l| {
        let m = Arc::new(metrics::Metrics::new(ctl.clone()));
        listeners.observer = Some(m.rpc_observer());
        if let Some(w) = &ctl.modules.wasm {
            w.observe_calls(m.call_observer());
        }
        metrics::serve(l, m)
    });
    info!(socket = %cfg.socket.display(), tls = ?cfg.listen, "serving");
    weft_grpc::server::serve(ctl, access, &listeners, shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!("serving on {}: {e}", cfg.socket.display()))?;
    periodic.abort();
    if let Some(s) = sync {
        s.abort();
    }
    watcher.abort();
    reload.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    let _ = std::fs::remove_file(&cfg.socket);
    info!("stopped; kernel state left in place");
    Ok(())
}

/// On SIGHUP, read the configuration file again and put its access rules in
/// force for the next request (connections stay open). A file that does not
/// check out changes nothing and says why.
fn spawn_reload(cfg: &config::Config, access: Arc<SharedAccess>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (path, fixed) = (cfg.config_path(), cfg.trust_domain.clone().unwrap_or_default());
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let Some(path) = &path else {
                info!("SIGHUP: no configuration file to reload");
                continue;
            };
            match config_file::read(path) {
                Ok(f) => {
                    // The trust domain the listener runs with stays.
                    access.set(weft_model::access::Access { trust_domain: fixed.clone(), ..f.access() });
                    info!(file = %path.display(), "SIGHUP: configuration reloaded");
                }
                Err(e) => warn!(error = %e, "SIGHUP: configuration not reloaded; the rules in force stay"),
            }
        }
    }))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
}
