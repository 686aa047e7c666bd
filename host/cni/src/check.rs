//! CHECK: the attachment is still as ADD made it. weftd's record is
//! compared with the runtime's previous result, and the kernel with both:
//! inside the namespace (the interface, up, its addresses, the default
//! routes the result names) and on the host (the veth, up, a port of the
//! network's bridge). Every difference is reported, not just the first.

use serde_json::Value;
use weft_kernel::{Kernel, KernelApi};
use weft_model::IfName;

use crate::conf::{Env, NetConf};
use crate::error::{self, CniError};
use crate::result::named_in;
use crate::verbs::{attached, connect};

/// CHECK.
pub async fn check(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    env.require(&["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])?;
    let Some(prev) = &conf.prev_result else {
        return Err(CniError::new(error::INVALID_CONFIG, "CHECK needs prevResult (the result of ADD)"));
    };
    let ch = connect(conf, error::TRY_AGAIN).await?;
    let ep = attached(conf, env, ch).await?;
    let mut diffs = recorded(prev, &ep);
    if ep.netns != env.netns {
        diffs.push(format!("weftd attached namespace {}, not CNI_NETNS {}", ep.netns, env.netns));
    }
    diffs.extend(kernel(&ep, prev).await?);
    if diffs.is_empty() {
        return Ok(());
    }
    Err(CniError::new(
        error::CHECK_FAILED,
        format!("container {} ({}): {} difference(s): {}", env.container_id, env.ifname, diffs.len(), diffs[0]),
    )
    .with_details(diffs.join("; ")))
}

/// What the previous result says against weftd's record.
fn recorded(prev: &Value, ep: &weft_grpc::pb::Endpoint) -> Vec<String> {
    let mut diffs = Vec::new();
    let (mut said, mac) = named_in(prev);
    let mut has = ep.addresses.clone();
    said.sort();
    has.sort();
    if said != has {
        diffs.push(format!("the result has addresses [{}], weftd [{}]", said.join(", "), has.join(", ")));
    }
    if let Some(mac) = mac
        && !mac.eq_ignore_ascii_case(&ep.mac)
    {
        diffs.push(format!("the result has MAC {mac}, weftd {}", ep.mac));
    }
    diffs
}

/// What the kernel has against weftd's record.
async fn kernel(ep: &weft_grpc::pb::Endpoint, prev: &Value) -> Result<Vec<String>, CniError> {
    let io = |what: &str, e: &dyn std::fmt::Display| CniError::new(error::IO_FAILURE, format!("{what}: {e}"));
    let name = |s: &str| IfName::parse("ifname", s).map_err(|e| io("an interface name", &e));
    let kernel = Kernel::new().map_err(|e| io("opening netlink", &e))?;
    let mut diffs = Vec::new();
    let ifname = name(&ep.ifname)?;
    let inside = kernel
        .observe_inside(std::path::Path::new(&ep.netns), &ifname)
        .await
        .map_err(|e| io(&format!("looking into {}", ep.netns), &e))?;
    match &inside.link {
        None => diffs.push(format!("{} is missing in {}", ep.ifname, ep.netns)),
        Some(link) => {
            if !link.up {
                diffs.push(format!("{} in {} is down", ep.ifname, ep.netns));
            }
            for a in &ep.addresses {
                if !link.addresses.iter().any(|l| l.to_string() == *a) {
                    diffs.push(format!("{} in {} lacks address {a}", ep.ifname, ep.netns));
                }
            }
        }
    }
    let routes = prev["routes"].as_array().map(Vec::as_slice).unwrap_or_default();
    for (dst, present) in [("0.0.0.0/0", inside.default_v4), ("::/0", inside.default_v6)] {
        if !present && routes.iter().any(|r| r["dst"] == dst) {
            diffs.push(format!("{} has no default route {dst}", ep.netns));
        }
    }
    if crate::result::has_host_side(ep) {
        let host = name(&ep.host_ifname)?;
        match kernel.observe_link(&host).await.map_err(|e| io(&format!("reading {}", ep.host_ifname), &e))? {
            None => diffs.push(format!("host interface {} is missing", ep.host_ifname)),
            Some(link) => {
                if !link.up {
                    diffs.push(format!("host interface {} is down", ep.host_ifname));
                }
                let master = link.master.as_ref().map(ToString::to_string).unwrap_or_default();
                if master != ep.bridge {
                    diffs.push(format!("host interface {} is not a port of bridge {}", ep.host_ifname, ep.bridge));
                }
            }
        }
    }
    Ok(diffs)
}
