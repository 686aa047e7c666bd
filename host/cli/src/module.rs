//! `weft module ...`: upload, list, inspect and remove the tenant's Wasm
//! components. Uploads stream in 1 MiB chunks; weftd validates, compiles
//! once (in a bounded worker) and caches by sha256.

use clap::Subcommand;
use serde_json::json;
use weft_grpc::client::ModuleServiceClient;
use weft_grpc::pb;

use crate::output;

/// `weft module` subcommands.
#[derive(Subcommand)]
pub enum ModuleCmd {
    /// Upload a component; prints its sha256 digest.
    Upload {
        /// The component (.wasm).
        file: String,
        /// ipam, policy or naming.
        #[arg(long)]
        kind: String,
        /// The name networks bind it by.
        #[arg(long)]
        name: String,
    },
    /// List the tenant's modules and the built-ins.
    #[command(alias = "list")]
    Ls,
    /// Show one module.
    Inspect {
        /// Module name.
        name: String,
    },
    /// Remove a module (refused while a network is bound to it).
    #[command(alias = "remove")]
    Rm {
        /// Module name.
        name: String,
    },
    /// Run a component offline (no weftd): allocate, name or compile and
    /// classify with the same sandbox and checks weftd applies.
    Test(crate::module_test::TestArgs),
}

const CHUNK: usize = 1 << 20;

fn module_json(m: &pb::Module) -> serde_json::Value {
    json!({
        "name": m.name,
        "tenant": m.tenant,
        "kind": m.kind,
        "digest": format!("sha256:{}", m.digest),
        "size": m.size,
        "builtin": m.builtin,
        "created": m.created,
        "imports": m.imports,
        "exports": m.exports,
        "bound_to": m.bound_to,
    })
}

/// Run one `weft module` command.
pub async fn run(
    mut c: ModuleServiceClient<tonic::transport::Channel>,
    tenant: String,
    json_out: bool,
    dry_run: bool,
    cmd: ModuleCmd,
) -> Result<(), String> {
    let status = |s: tonic::Status| format!("{} ({:?})", s.message(), s.code());
    match cmd {
        ModuleCmd::Upload { file, kind, name } => {
            use pb::upload_module_request::Part;
            let bytes = std::fs::read(&file).map_err(|e| format!("reading {file}: {e}"))?;
            let header = pb::ModuleHeader { tenant, name, kind, dry_run };
            let mut parts = vec![pb::UploadModuleRequest { part: Some(Part::Header(header)) }];
            parts.extend(bytes.chunks(CHUNK).map(|c| pb::UploadModuleRequest { part: Some(Part::Chunk(c.to_vec())) }));
            let m = c.upload_module(tokio_stream::iter(parts)).await.map_err(status)?.into_inner();
            match &m.dry_run {
                Some(p) if json_out => output::print_json(&output::plan_json(p)),
                Some(p) => output::plan_text(p),
                None if json_out => output::print_json(&module_json(&m)),
                None => println!("sha256:{}", m.digest),
            }
        }
        ModuleCmd::Ls => {
            let l = c.list_modules(pb::ListModulesRequest { tenant }).await.map_err(status)?.into_inner();
            if json_out {
                output::print_json(&serde_json::Value::Array(l.modules.iter().map(module_json).collect()));
            } else {
                output::table(
                    &["NAME", "KIND", "DIGEST", "SIZE", "SOURCE", "NETWORKS"],
                    l.modules
                        .iter()
                        .map(|m| {
                            vec![
                                m.name.clone(),
                                m.kind.clone(),
                                format!("sha256:{}", &m.digest[..m.digest.len().min(12)]),
                                m.size.to_string(),
                                if m.builtin { "built-in".into() } else { "uploaded".into() },
                                m.bound_to.join(","),
                            ]
                        })
                        .collect(),
                );
            }
        }
        ModuleCmd::Inspect { name } => {
            let m = c.get_module(pb::GetModuleRequest { tenant, name }).await.map_err(status)?.into_inner();
            if json_out {
                output::print_json(&module_json(&m));
            } else {
                println!("Name:      {}", m.name);
                println!("Kind:      {}", m.kind);
                println!("Digest:    sha256:{}", m.digest);
                println!("Size:      {} bytes", m.size);
                println!("Source:    {}", if m.builtin { "built-in" } else { "uploaded" });
                for i in &m.imports {
                    println!("Imports:   {i}");
                }
                for e in &m.exports {
                    println!("Exports:   {e}");
                }
                println!("Networks:  {}", m.bound_to.join(", "));
            }
        }
        ModuleCmd::Rm { name } => {
            let r = c
                .delete_module(pb::DeleteModuleRequest { tenant, name: name.clone(), dry_run })
                .await
                .map_err(status)?
                .into_inner();
            match &r.dry_run {
                Some(p) if json_out => output::print_json(&output::plan_json(p)),
                Some(p) => output::plan_text(p),
                None => println!("{name}"),
            }
        }
        ModuleCmd::Test(a) => crate::module_test::run(a)?,
    }
    Ok(())
}
