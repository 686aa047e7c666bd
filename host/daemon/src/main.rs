//! weftd: the weft network controller daemon. Wiring only: parse flags, set
//! up logging, open the store, load the built-in components, reconcile, and
//! serve the gRPC API until SIGTERM/SIGINT. Kernel state is left in place on
//! exit so containers keep networking while weftd restarts.

mod change;
mod commit;
mod config;
mod controller;
mod decide;
mod drift;
mod events;
mod index;
mod locks;
mod modules;
mod reconcile;
mod timings;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tracing::info;

fn main() -> anyhow::Result<std::process::ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(worker::ARG) {
        return Ok(worker::main(&args[2..]));
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve())?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn serve() -> anyhow::Result<()> {
    let cfg = config::Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let ctl = Arc::new(controller::Ctl::start(&cfg).await.context("starting weftd")?);
    let periodic = reconcile::spawn_periodic(ctl.clone(), cfg.reconcile_interval());
    let watcher = drift::spawn(ctl.clone()).context("starting the drift watcher")?;
    info!(socket = %cfg.socket.display(), "serving");
    weft_grpc::server::serve_unix(ctl, &cfg.socket, shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!("serving on {}: {e}", cfg.socket.display()))?;
    periodic.abort();
    watcher.abort();
    let _ = std::fs::remove_file(&cfg.socket);
    info!("stopped; kernel state left in place");
    Ok(())
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
