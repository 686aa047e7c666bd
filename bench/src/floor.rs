//! The kernel floors: the same kernel work every system does — a bridge
//! with a /16; per endpoint a veth pair (the container end born in its
//! namespace as `eth0`), an address, `lo` and `eth0` up, a default route,
//! one published TCP port as a DNAT map element — with nothing else.
//!
//! - **floor (processes)**: per endpoint, one `ip -batch` in the host
//!   namespace, one `ip -n NS -batch` inside the container and one
//!   `nft -f` transaction: what a shell script with the standard tools
//!   pays. Teardown: one `nft -f` deleting the element, one `ip link del`.
//! - **floor (batched)**: one long-lived process (this one) that holds a
//!   route socket in every namespace and sends the netlink messages of all
//!   N endpoints, each acknowledged: the N veth creations in the host
//!   namespace, then each container's four messages; then ONE nft
//!   transaction adding the N elements. The per-endpoint figure is the wall
//!   time of the whole / N. Teardown: one nft transaction deleting the N
//!   elements and one `RTM_DELLINK` of the veths' link group. Nothing a
//!   controller can do per endpoint is cheaper than this.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};
use weft_tests::{Netns, sh};

use crate::attach::{SYSTEMS, Series, addr, check_ping, in_host, per_container, ping_target, port, timed};
use crate::firewall::count_ruleset;

/// The batched floor's veths are in this link group, deleted in one call.
const GROUP: u32 = 0x6266;
/// The container end's interface index, asked for at creation (a fresh
/// namespace has only `lo`, index 1), so the messages inside need no lookup.
const ETH0_INDEX: u32 = 2;
/// The host ends' first interface index.
const HOST_INDEX: u32 = 10_000;

/// The floor's nft table: the DNAT map and the forward rules.
fn table(name: &str, bridge: &str) -> String {
    format!(
        "table inet {name} {{
  map dnat4 {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local dnat ip to meta l4proto . th dport map @dnat4; }}
  chain forward {{ type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct status dnat accept
    iifname \"{bridge}\" accept; }}
}}
"
    )
}

/// A host namespace with the floor's bridge (`gateway`/16) and table.
fn host(tag: &str, bridge: &str, gateway: Ipv4Addr, nft: &str) -> Result<Netns> {
    let host = Netns::new("b", tag);
    let h = host.name.as_str();
    sh(&["ip", "-n", h, "link", "add", bridge, "type", "bridge"]);
    sh(&["ip", "-n", h, "addr", "add", &format!("{gateway}/16"), "dev", bridge]);
    sh(&["ip", "-n", h, "link", "set", bridge, "up"]);
    sh(&["ip", "netns", "exec", h, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let script = table(nft, bridge);
    in_host(&host, move || timed(Command::new("nft").args(["-f", "-"]), &script).map(|_| ()))?;
    Ok(host)
}

/// The floor with the standard tools: three processes per endpoint.
pub fn processes(containers: &[Netns]) -> Result<Series> {
    let host = host("flhost", "wbfl0", Ipv4Addr::new(10, 93, 0, 1), "wbfloor")?;
    let names: Arc<Vec<String>> = Arc::new(containers.iter().map(|c| c.name.clone()).collect());
    let setup = move |i: usize, _path: &str| -> Result<Duration> {
        let a = addr([10, 93], i);
        let (_, t1) = timed(
            Command::new("ip").args(["-batch", "-"]),
            &format!("link add vfl{i} type veth peer name eth0 netns {}\nlink set vfl{i} master wbfl0 up\n", names[i]),
        )?;
        let (_, t2) = timed(
            Command::new("ip").args(["-n", &names[i], "-batch", "-"]),
            &format!("addr add {a}/16 dev eth0\nlink set lo up\nlink set eth0 up\nroute add default via 10.93.0.1\n"),
        )?;
        let (_, t3) = timed(
            Command::new("nft").args(["-f", "-"]),
            &format!("add element inet wbfloor dnat4 {{ tcp . {} : {a} . 80 }}\n", port(i)),
        )?;
        Ok(t1 + t2 + t3)
    };
    let teardown = move |i: usize, _path: &str| -> Result<Duration> {
        let (_, t1) = timed(
            Command::new("nft").args(["-f", "-"]),
            &format!("delete element inet wbfloor dnat4 {{ tcp . {} }}\n", port(i)),
        )?;
        let (_, t2) = timed(Command::new("ip").args(["-batch", "-"]), &format!("link del vfl{i}\n"))?;
        Ok(t1 + t2)
    };
    per_container(
        SYSTEMS[5],
        containers,
        |n| ping_target([10, 93], n),
        &host,
        Duration::MAX,
        (Box::new(setup), Box::new(teardown)),
    )
}

/// The floor of one long-lived process batching everything.
pub fn batched(containers: &[Netns]) -> Result<Series> {
    let n = containers.len();
    let gateway = Ipv4Addr::new(10, 94, 0, 1);
    let host = host("bfhost", "wbbf0", gateway, "wbbfloor")?;
    let mut s = Series { system: SYSTEMS[7], n, done: n, ..Default::default() };
    let paths: Vec<String> = containers.iter().map(Netns::path).collect();
    let hostpath = host.path();

    let t0 = Instant::now();
    // A route socket in each namespace (a thread enters it, opens the
    // socket, and leaves; the socket stays where it was opened).
    let hs = socket_in(&hostpath)?;
    let inside: Vec<Socket> = paths.iter().map(|p| socket_in(p)).collect::<Result<_>>()?;
    let files: Vec<std::fs::File> =
        paths.iter().map(|p| std::fs::File::open(p).with_context(|| format!("open {p}"))).collect::<Result<_>>()?;
    let bridge = index_of(&host, "wbbf0")?;
    let veths: Vec<RouteNetlinkMessage> = (0..n)
        .map(|i| {
            let mut peer = LinkUnspec::new_with_name("eth0").setns_by_fd(files[i].as_raw_fd()).build();
            peer.header.index = ETH0_INDEX;
            let mut msg = LinkVeth::new(&format!("vbf{i}"), "eth0")
                .controller(bridge)
                .up()
                .append_extra_attribute(LinkAttribute::Group(GROUP))
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build();
            // The kernel gives the peer the index asked for only when the
            // host end asks for one too (the host namespace is fresh).
            msg.header.index = HOST_INDEX + i as u32;
            RouteNetlinkMessage::NewLink(msg)
        })
        .collect();
    exchange(&hs, veths, NLM_F_CREATE | NLM_F_EXCL).context("batched floor: veths")?;
    for (i, sock) in inside.iter().enumerate() {
        let mut a = AddressMessage::default();
        a.header.family = netlink_packet_route::AddressFamily::Inet;
        a.header.prefix_len = 16;
        a.header.index = ETH0_INDEX;
        a.attributes.push(AddressAttribute::Local(addr([10, 94], i).into()));
        a.attributes.push(AddressAttribute::Address(addr([10, 94], i).into()));
        let msgs = vec![
            RouteNetlinkMessage::NewAddress(a),
            RouteNetlinkMessage::SetLink(LinkUnspec::new_with_index(1).up().build()),
            RouteNetlinkMessage::SetLink(LinkUnspec::new_with_index(ETH0_INDEX).up().build()),
            RouteNetlinkMessage::NewRoute(
                RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).output_interface(ETH0_INDEX).build(),
            ),
        ];
        exchange(sock, msgs, NLM_F_CREATE | NLM_F_EXCL).with_context(|| format!("batched floor: inside c{i}"))?;
    }
    let elements: Vec<String> = (0..n).map(|i| format!("tcp . {} : {} . 80", port(i), addr([10, 94], i))).collect();
    let script = format!("add element inet wbbfloor dnat4 {{ {} }}\n", elements.join(", "));
    in_host(&host, move || timed(Command::new("nft").args(["-f", "-"]), &script).map(|_| ()))?;
    s.setup_total = t0.elapsed();
    drop(inside);

    s.counts = Some(count_ruleset(&host.name)?);
    check_ping(SYSTEMS[7], &containers[0], ping_target([10, 94], n))?;
    let t0 = Instant::now();
    let keys: Vec<String> = (0..n).map(|i| format!("tcp . {}", port(i))).collect();
    let script = format!("delete element inet wbbfloor dnat4 {{ {} }}\n", keys.join(", "));
    in_host(&host, move || timed(Command::new("nft").args(["-f", "-"]), &script).map(|_| ()))?;
    let mut del = LinkUnspec::new_with_index(0).build();
    del.attributes.push(LinkAttribute::Group(GROUP));
    exchange(&hs, vec![RouteNetlinkMessage::DelLink(del)], 0).context("batched floor: link group deletion")?;
    s.teardown_total = t0.elapsed();
    Ok(s)
}

/// A route socket opened inside the namespace at `path`.
fn socket_in(path: &str) -> Result<Socket> {
    let path = path.to_owned();
    std::thread::spawn(move || -> Result<Socket> {
        let f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {path}"))?;
        let mut s = Socket::new(NETLINK_ROUTE)?;
        s.bind_auto()?;
        s.set_cap_ack(true)?;
        Ok(s)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("socket thread panicked"))?
}

/// The index of link `name` in `ns` (setup, not timed work).
fn index_of(ns: &Netns, name: &str) -> Result<u32> {
    let out = ns.exec(&["cat", &format!("/sys/class/net/{name}/ifindex")]);
    String::from_utf8_lossy(&out.stdout).trim().parse().with_context(|| format!("ifindex of {name}"))
}

/// Messages per send: each answer costs the receive buffer a whole socket
/// buffer (~1 KiB of truesize), and the default 208 KiB overflows (ENOBUFS)
/// at a few hundred.
const BATCH: usize = 64;

/// Send `msgs` (each asking for an acknowledgement), [`BATCH`] per send,
/// and read every answer; the first refusal fails.
fn exchange(sock: &Socket, msgs: Vec<RouteNetlinkMessage>, flags: u16) -> Result<()> {
    let mut buf = Vec::new();
    let mut waiting = 0usize;
    let total = msgs.len();
    for (i, m) in msgs.into_iter().enumerate() {
        let mut nl = NetlinkMessage::from(m);
        nl.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        nl.header.sequence_number = i as u32 + 1;
        nl.finalize();
        let at = buf.len();
        buf.resize(at + nl.buffer_len(), 0);
        nl.serialize(&mut buf[at..]);
        waiting += 1;
        if waiting == BATCH || i + 1 == total {
            sock.send(&buf, 0)?;
            buf.clear();
            while waiting > 0 {
                waiting -= acks(sock)?;
            }
        }
    }
    Ok(())
}

/// Read one datagram of answers: how many acknowledgements it holds.
fn acks(sock: &Socket) -> Result<usize> {
    let (msg, _) = sock.recv_from_full()?;
    let mut at = 0;
    let mut n = 0;
    while at + 20 <= msg.len() {
        let word = |i: usize| u32::from_ne_bytes([msg[i], msg[i + 1], msg[i + 2], msg[i + 3]]);
        let len = word(at) as usize;
        let ty = u16::from_ne_bytes([msg[at + 4], msg[at + 5]]);
        if len < 16 || at + len > msg.len() {
            break;
        }
        if ty == 2 {
            let errno = -(word(at + 16) as i32);
            if errno != 0 {
                bail!("{}", std::io::Error::from_raw_os_error(errno));
            }
            n += 1;
        }
        at += len.next_multiple_of(4);
    }
    Ok(n)
}
