//! weft-cni: weft's CNI plugin (installed as `/opt/cni/bin/weft`, network
//! configuration `"type": "weft"`). A container runtime runs it once per
//! verb with the `CNI_*` environment and the network configuration on
//! stdin; it asks weftd (over its socket or TLS listener, authenticated
//! like any caller) and prints the result, or CNI's error object, on
//! stdout. The kernel work is weftd's; CHECK only reads the kernel.

mod check;
mod conf;
mod error;
mod result;
mod verbs;

use std::io::{Read, Write};
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::conf::{Env, NetConf, SUPPORTED_VERSIONS, at_least, check_version};
use crate::error::CniError;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let conf = read
        .map_err(|e| CniError::new(error::IO_FAILURE, format!("reading stdin: {e}")))
        .and_then(|_| NetConf::parse(&stdin));
    let version = conf.as_ref().map(|c| c.cni_version.clone()).unwrap_or_default();
    let answer = conf.and_then(|conf| {
        let env = Env::from_env()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CniError::new(error::IO_FAILURE, format!("starting: {e}")))?;
        rt.block_on(run(&conf, &env))
    });
    let mut out = std::io::stdout().lock();
    let code = match answer {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let shown = if SUPPORTED_VERSIONS.contains(&version.as_str()) { version } else { "1.1.0".to_owned() };
            let mut v = json!({ "cniVersion": shown, "code": e.code, "msg": e.msg });
            if !e.details.is_empty() {
                v["details"] = json!(e.details);
            }
            let _ = writeln!(out, "{v}");
            ExitCode::FAILURE
        }
    };
    let _ = out.flush();
    code
}

/// One verb; what it prints on success.
async fn run(conf: &NetConf, env: &Env) -> Result<Option<Value>, CniError> {
    if env.command == "VERSION" {
        if !conf.cni_version.is_empty() {
            check_version(&conf.cni_version)?;
        }
        let shown = if conf.cni_version.is_empty() { "1.1.0" } else { &conf.cni_version };
        return Ok(Some(json!({ "cniVersion": shown, "supportedVersions": SUPPORTED_VERSIONS })));
    }
    conf.check()?;
    let since = |verb: &str, min: &str| {
        if at_least(&conf.cni_version, min) {
            Ok(())
        } else {
            Err(CniError::new(
                error::INCOMPATIBLE_VERSION,
                format!("{verb} needs cniVersion {min} or later; the configuration says {}", conf.cni_version),
            ))
        }
    };
    match env.command.as_str() {
        "ADD" => verbs::add(conf, env).await.map(Some),
        "DEL" => verbs::del(conf, env).await.map(|()| None),
        "CHECK" => {
            since("CHECK", "0.4.0")?;
            check::check(conf, env).await.map(|()| None)
        }
        "GC" => {
            since("GC", "1.1.0")?;
            verbs::gc(conf).await.map(|_| None)
        }
        "STATUS" => {
            since("STATUS", "1.1.0")?;
            verbs::status(conf).await.map(|()| None)
        }
        "" => Err(CniError::new(error::INVALID_ENV, "CNI_COMMAND is not set")),
        other => Err(CniError::new(
            error::INVALID_ENV,
            format!("CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"),
        )),
    }
}
