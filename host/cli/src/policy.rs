//! `weft policy ...`: apply, list and delete policy documents, and explain a
//! verdict. Documents are sent as written (YAML or JSON); weftd splits them,
//! checks their identity and hands them to the network's policy component.

use std::io::Read;

use clap::Subcommand;
use serde_json::json;
use weft_grpc::client::PolicyServiceClient;
use weft_grpc::pb;

use crate::output;

/// `weft policy` subcommands.
#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Create or replace documents (YAML or JSON; several separated by ---,
    /// or a kind: List). All or nothing.
    Apply {
        /// File to read; - for standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Apply to this network only [default: every network of the tenant
        /// whose policy component takes documents].
        #[arg(long, default_value = "")]
        network: String,
    },
    /// List documents.
    #[command(alias = "list")]
    Ls {
        /// Only documents applied to this network.
        #[arg(long, default_value = "")]
        network: String,
    },
    /// Delete the documents in a file, or one by name.
    #[command(alias = "rm")]
    Delete {
        /// Document name (or use -f).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        name: Option<String>,
        /// Delete the documents this file names; - for standard input.
        #[arg(short = 'f', long = "filename")]
        file: Option<String>,
        /// The document's kind, when several share the name.
        #[arg(long, default_value = "")]
        kind: String,
        /// The document's namespace, when several share the name.
        #[arg(short = 'n', long, default_value = "")]
        namespace: String,
    },
    /// Would a new flow from one endpoint to another be allowed, and which
    /// rule (or isolation) of which document decides it?
    Check {
        /// Network name.
        #[arg(long)]
        network: String,
        /// Source endpoint.
        #[arg(long)]
        from: String,
        /// Destination endpoint.
        #[arg(long)]
        to: String,
        /// PORT[/tcp|udp|sctp] or icmp.
        #[arg(long, default_value = "icmp")]
        port: String,
    },
}

fn read(file: &str) -> Result<String, String> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| format!("reading standard input: {e}"))?;
        return Ok(s);
    }
    std::fs::read_to_string(file).map_err(|e| format!("reading {file}: {e}"))
}

fn doc_name(d: &pb::PolicyDocument) -> String {
    if d.namespace.is_empty() {
        format!("{}/{}", d.kind, d.name)
    } else {
        format!("{}/{}/{}", d.kind, d.namespace, d.name)
    }
}

fn doc_json(d: &pb::PolicyDocument) -> serde_json::Value {
    json!({
        "kind": d.kind,
        "namespace": d.namespace,
        "name": d.name,
        "network": d.network,
        "document": serde_json::from_str::<serde_json::Value>(&d.body).unwrap_or(serde_json::Value::Null),
    })
}

fn check_line(what: &str, c: &Option<pb::PolicyCheck>) -> String {
    let Some(c) = c else { return format!("{what}: unknown") };
    match c.outcome.as_str() {
        "not_isolated" => format!("{what}: not isolated"),
        "allowed" => format!("{what}: allowed by rule {:?} of {}", c.rule, c.source),
        _ => format!("{what}: denied: isolated by {} and no rule allows it", c.isolated_by.join(", ")),
    }
}

fn check_json(c: &Option<pb::PolicyCheck>) -> serde_json::Value {
    match c {
        Some(c) => json!({ "outcome": c.outcome, "rule": c.rule, "source": c.source, "isolated_by": c.isolated_by }),
        None => serde_json::Value::Null,
    }
}

/// Run one `weft policy` command.
pub async fn run(
    mut c: PolicyServiceClient<tonic::transport::Channel>,
    tenant: String,
    json_out: bool,
    dry_run: bool,
    cmd: PolicyCmd,
) -> Result<(), String> {
    let status = |s: tonic::Status| format!("{} ({:?})", s.message(), s.code());
    match cmd {
        PolicyCmd::Apply { file, network } => {
            let req = pb::ApplyPoliciesRequest { tenant, network, documents: read(&file)?, dry_run };
            let r = c.apply_policies(req).await.map_err(status)?.into_inner();
            if let Some(p) = &r.dry_run {
                if json_out { output::print_json(&output::plan_json(p)) } else { output::plan_text(p) }
            } else if json_out {
                output::print_json(&json!({
                    "documents": r.documents.iter().map(|a| json!({
                        "action": a.action,
                        "kind": a.document.as_ref().map(|d| d.kind.clone()),
                        "namespace": a.document.as_ref().map(|d| d.namespace.clone()),
                        "name": a.document.as_ref().map(|d| d.name.clone()),
                    })).collect::<Vec<_>>(),
                    "networks": r.networks,
                }));
            } else {
                for a in &r.documents {
                    if let Some(d) = &a.document {
                        println!("{} {}", doc_name(d), a.action);
                    }
                }
                if r.networks.is_empty() {
                    println!("(no network compiles these documents yet)");
                } else {
                    println!("recompiled: {}", r.networks.join(", "));
                }
            }
        }
        PolicyCmd::Ls { network } => {
            let l = c.list_policies(pb::ListPoliciesRequest { tenant, network }).await.map_err(status)?.into_inner();
            if json_out {
                output::print_json(&serde_json::Value::Array(l.documents.iter().map(doc_json).collect()));
            } else {
                output::table(
                    &["KIND", "NAMESPACE", "NAME", "NETWORK"],
                    l.documents
                        .iter()
                        .map(|d| {
                            let net = if d.network.is_empty() { "(all)".to_string() } else { d.network.clone() };
                            vec![d.kind.clone(), d.namespace.clone(), d.name.clone(), net]
                        })
                        .collect(),
                );
            }
        }
        PolicyCmd::Delete { name, file, kind, namespace } => {
            let documents = match &file {
                Some(f) => read(f)?,
                None => String::new(),
            };
            let req = pb::DeletePoliciesRequest {
                tenant,
                documents,
                name: name.unwrap_or_default(),
                kind,
                namespace,
                dry_run,
            };
            let r = c.delete_policies(req).await.map_err(status)?.into_inner();
            if let Some(p) = &r.dry_run {
                if json_out { output::print_json(&output::plan_json(p)) } else { output::plan_text(p) }
            } else if json_out {
                output::print_json(&json!({
                    "deleted": r.documents.iter().map(doc_json).collect::<Vec<_>>(),
                    "networks": r.networks,
                }));
            } else {
                for d in &r.documents {
                    println!("{} deleted", doc_name(d));
                }
            }
        }
        PolicyCmd::Check { network, from, to, port } => {
            let req =
                pb::CheckPolicyRequest { tenant, network, from: from.clone(), to: to.clone(), port: port.clone() };
            let r = c.check_policy(req).await.map_err(status)?.into_inner();
            if json_out {
                output::print_json(&json!({
                    "allowed": r.allowed,
                    "from": { "endpoint": from, "address": r.from_address },
                    "to": { "endpoint": to, "address": r.to_address },
                    "port": port,
                    "egress": check_json(&r.egress),
                    "ingress": check_json(&r.ingress),
                }));
            } else {
                let verdict = if r.allowed { "allowed" } else { "denied" };
                println!("{verdict}: {from} ({}) -> {to} ({}) {port}", r.from_address, r.to_address);
                println!("  {}", check_line(&format!("egress of {from}"), &r.egress));
                println!("  {}", check_line(&format!("ingress of {to}"), &r.ingress));
            }
        }
    }
    Ok(())
}
