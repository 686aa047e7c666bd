//! Firewall scaling: how many nftables rules and set elements each system
//! leaves in its host namespace, and what a packet pays — iperf3 between
//! two weft containers with 0 or 10,000 published ports and 0 or 1,000
//! policy rules installed.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use weft_grpc::pb;
use weft_tests::{Host, Netns, addr_of, in_ns};

/// Rules and elements in one namespace's whole ruleset (all tables: weft's
/// own, or the iptables-nft tables netavark and portmap fill).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub rules: usize,
    pub elements: usize,
}

/// Count the rules and set/map elements of namespace `ns`.
pub fn count_ruleset(ns: &str) -> Result<Counts> {
    let out = in_ns(ns, &["nft", "-j", "list", "ruleset"]);
    if !out.status.success() {
        bail!("nft list ruleset in {ns}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut c = Counts::default();
    for o in v["nftables"].as_array().map(Vec::as_slice).unwrap_or_default() {
        if o.get("rule").is_some() {
            c.rules += 1;
        }
        for kind in ["set", "map"] {
            if let Some(e) = o.get(kind).and_then(|s| s.get("elem")).and_then(|e| e.as_array()) {
                c.elements += e.len();
            }
        }
    }
    Ok(c)
}

/// One iperf3 scenario's result.
pub struct Throughput {
    pub scenario: &'static str,
    pub counts: Counts,
    /// Median of the runs, Gbit/s.
    pub gbits: f64,
    pub runs: Vec<f64>,
}

/// An iperf3 server in a namespace, stopped (by PID) on drop.
struct Iperf(Child);

impl Drop for Iperf {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn iperf_once(client: &Netns, server: &str, secs: u32) -> Result<f64> {
    let out = client.exec(&["iperf3", "-J", "-c", server, "-t", &secs.to_string()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .with_context(|| format!("iperf3 failed: {}", v["error"]))
}

/// A NetworkPolicy selecting pod `srv` with `rules` ingress rules, each
/// allowing one /32 outside the network on its own port, and a last rule
/// allowing `cli` on iperf3's port — the rule every new flow reaches last.
fn policy_with_rules(rules: usize) -> String {
    let mut ingress = String::new();
    for i in 0..rules {
        ingress.push_str(&format!(
            "  - from: [{{ipBlock: {{cidr: 172.{}.{}.{}/32}}}}]\n    ports: [{{port: {}}}]\n",
            16 + i / 65536,
            (i / 256) % 256,
            i % 256,
            1000 + i % 60000
        ));
    }
    ingress.push_str("  - from: [{podSelector: {matchLabels: {app: cli}}}]\n    ports: [{port: 5201}]\n");
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: many, namespace: default}}\nspec:\n  podSelector: {{matchLabels: {{app: srv}}}}\n  ingress:\n{ingress}"
    )
}

/// A `policy-k8s` network `network` on `subnet` with two containers
/// attached, labelled `app: srv` and `app: cli`: the server's and the
/// client's namespaces and the server's address.
pub fn server_and_client(
    rt: &tokio::runtime::Runtime,
    host: &Host,
    network: &str,
    subnet: &str,
) -> Result<(Netns, Netns, String)> {
    let (srv, cli) = (host.container("srv"), host.container("cli"));
    let srv_addr = rt.block_on(async {
        let req = pb::CreateNetworkRequest {
            name: network.into(),
            subnets: vec![pb::Subnet { subnet: subnet.into(), ..Default::default() }],
            policy: "policy-k8s".into(),
            ..Default::default()
        };
        host.networks().await.create_network(req).await?;
        let mut addr = String::new();
        for (name, ns) in [("srv", &srv), ("cli", &cli)] {
            let req = pb::AttachEndpointRequest {
                network: network.into(),
                name: name.into(),
                netns: ns.path(),
                labels: [("app".to_string(), name.to_string())].into_iter().collect(),
                ..Default::default()
            };
            let ep = host.endpoints().await.attach_endpoint(req).await?.into_inner();
            if name == "srv" {
                addr = addr_of(&ep.addresses[0]);
            }
        }
        Ok::<_, anyhow::Error>(addr)
    })?;
    Ok((srv, cli, srv_addr))
}

/// Throughput between two containers of one weft network under each
/// scenario (each measured `runs` times for `secs` seconds).
pub fn throughput(runs: usize, secs: u32) -> Result<Vec<Throughput>> {
    let rt = crate::tokio_rt(1)?;
    let host = Host::new("bfw");
    let (srv, cli, srv_addr) = server_and_client(&rt, &host, "perf", "10.95.0.0/24")?;
    let many = host.container("many");
    let _server = Iperf(
        Command::new("ip")
            .args(["netns", "exec", &srv.name, "iperf3", "-s", "-B", &srv_addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("iperf3 (apt-get install iperf3)")?,
    );
    std::thread::sleep(Duration::from_millis(300));
    let measure = |scenario: &'static str| -> Result<Throughput> {
        let counts = count_ruleset(&host.ns.name)?;
        let mut r = Vec::new();
        for _ in 0..runs {
            r.push(iperf_once(&cli, &srv_addr, secs)?);
        }
        Ok(Throughput { scenario, counts, gbits: crate::stats::median(&r), runs: r })
    };
    let mut out = vec![measure("0 published ports, 0 policy rules")?];
    rt.block_on(async {
        let req = pb::AttachEndpointRequest {
            network: "perf".into(),
            name: "many".into(),
            netns: many.path(),
            // 10,000 ports in mappings of at most MAX_RANGE (4,096) each.
            publish: vec![
                "30000-34095:30000-34095/tcp".into(),
                "34096-38191:34096-38191/tcp".into(),
                "38192-39999:38192-39999/tcp".into(),
            ],
            ..Default::default()
        };
        host.endpoints().await.attach_endpoint(req).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    out.push(measure("10,000 published ports, 0 policy rules")?);
    rt.block_on(async {
        let req = pb::ApplyPoliciesRequest {
            network: "perf".into(),
            documents: policy_with_rules(1000),
            ..Default::default()
        };
        host.policies().await.apply_policies(req).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    out.push(measure("10,000 published ports, 1,000 policy rules")?);
    rt.block_on(async {
        let req = pb::DetachEndpointRequest { network: "perf".into(), name: "many".into(), ..Default::default() };
        host.endpoints().await.detach_endpoint(req).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    out.push(measure("0 published ports, 1,000 policy rules")?);
    Ok(out)
}
