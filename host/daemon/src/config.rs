//! weftd's command-line flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// weftd — the weft network controller.
#[derive(Debug, Parser)]
#[command(name = "weftd", version, about)]
pub struct Config {
    /// Unix socket to serve the gRPC API on.
    #[arg(long, env = "WEFT_SOCKET", default_value = "/run/weft/weft.sock")]
    pub socket: PathBuf,
    /// Directory of the state database (weft.redb).
    #[arg(long, default_value = "/var/lib/weft")]
    pub state_dir: PathBuf,
    /// Directory of the built-in Wasm components (`*.wasm`, named by folder
    /// name). Default: `../modules` beside the weftd binary if present
    /// (`target/modules` in a checkout), else /usr/local/lib/weft/modules.
    #[arg(long, env = "WEFT_MODULES_DIR")]
    pub modules_dir: Option<PathBuf>,
    /// Seconds between reconcile passes (0 disables the periodic pass).
    #[arg(long, default_value_t = 30)]
    pub reconcile_interval_secs: u64,
}

impl Config {
    /// The built-in module directory to use.
    pub fn modules_dir(&self) -> PathBuf {
        if let Some(d) = &self.modules_dir {
            return d.clone();
        }
        if let Some(beside) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|p| p.join("../modules")))
            .filter(|p| p.is_dir())
        {
            return beside;
        }
        PathBuf::from("/usr/local/lib/weft/modules")
    }

    /// The periodic reconcile interval, if enabled.
    pub fn reconcile_interval(&self) -> Option<Duration> {
        (self.reconcile_interval_secs > 0).then(|| Duration::from_secs(self.reconcile_interval_secs))
    }
}
