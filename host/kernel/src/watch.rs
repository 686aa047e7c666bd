//! Kernel notifications weftd repairs drift from: rtnetlink link and
//! address messages (a bridge or veth deleted, downed, detached from its
//! bridge; an address removed) and nf_tables generations (a commit by some
//! other process that touched table `inet weft`). Each socket is read by
//! its own blocking thread, opened in the namespace of the calling thread
//! (weftd's), and reports on a channel; the caller decides which objects
//! are its own. weft's own nf_tables commits — from any of weftd's threads,
//! or from an `nft -f` child it ran ([`note_own_pid`]) — are not reported.

use std::collections::VecDeque;
use std::sync::Mutex;

use netlink_sys::protocols::{NETLINK_NETFILTER, NETLINK_ROUTE};
use netlink_sys::{Socket, SocketAddr};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::KernelError;

/// Something changed in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// A link appeared, changed or went away.
    Link {
        /// Its name.
        name: String,
        /// Deleted.
        gone: bool,
        /// Administratively up.
        up: bool,
        /// Index of its master (bridge), if any.
        master: Option<u32>,
    },
    /// An address was removed from the link with this index.
    AddrGone {
        /// The link's index.
        index: u32,
    },
    /// Another process committed an nf_tables generation that touched
    /// table `inet weft`.
    Nft,
    /// Notifications were lost (socket overrun): look at everything.
    Overflow,
}

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_DELADDR: u16 = 21;
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFF_UP: u32 = 0x1;
const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFTA_GEN_PROC_PID: u16 = 2;
/// In every nf_tables object message (table, chain, rule, set, element
/// list) attribute 1 is the table's name.
const NFTA_ANY_TABLE: u16 = 1;

/// Pids of `nft` processes weftd ran recently: their commits are weft's own.
static OWN_PIDS: Mutex<VecDeque<u32>> = Mutex::new(VecDeque::new());

/// Record that process `pid` (an `nft -f` child) acts for weftd.
pub fn note_own_pid(pid: u32) {
    let mut p = OWN_PIDS.lock().unwrap_or_else(|e| e.into_inner());
    p.push_back(pid);
    while p.len() > 64 {
        p.pop_front();
    }
}

fn is_own(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{pid}")).exists()
        || OWN_PIDS.lock().unwrap_or_else(|e| e.into_inner()).contains(&pid)
}

/// The index of link `name` in this namespace (an ioctl, no dump), if any.
pub fn index_of(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// Start both listeners; they run until `tx` is closed.
pub fn start(tx: UnboundedSender<KernelEvent>) -> Result<(), KernelError> {
    let route = open(NETLINK_ROUTE, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR, &[])?;
    let nft = open(NETLINK_NETFILTER, 0, &[NFNLGRP_NFTABLES])?;
    let t = tx.clone();
    spawn("weft-rtnl-watch", route, move |buf| parse_route(buf, &t))?;
    let mut touched = false;
    spawn("weft-nft-watch", nft, move |buf| parse_nft(buf, &mut touched, &tx))?;
    Ok(())
}

fn open(proto: isize, groups: u32, memberships: &[u32]) -> Result<Socket, KernelError> {
    let fail = |e: std::io::Error| KernelError::new("netlink watch", proto, e);
    let mut s = Socket::new(proto).map_err(fail)?;
    s.bind(&SocketAddr::new(0, groups)).map_err(fail)?;
    for g in memberships {
        s.add_membership(*g).map_err(fail)?;
    }
    // A burst of notifications (thousands of endpoints) must not overrun.
    let _ = s.set_rx_buf_sz(4i32 << 20);
    Ok(s)
}

/// Read `sock` on a thread; `handle` returns false once nobody listens.
fn spawn(name: &str, sock: Socket, mut handle: impl FnMut(&[u8]) -> bool + Send + 'static) -> Result<(), KernelError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match sock.recv(&mut &mut buf[..], 0) {
                    Ok(n) => {
                        if !handle(&buf[..n]) {
                            return;
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        // Overrun: report it as a message the parser knows.
                        if !handle(&[]) {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| KernelError::new("netlink watch", name, e))
}

/// The netlink messages in `buf`: (type, payload after the header).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let hdr = buf.get(off..off + 16)?;
        let len = u32::from_ne_bytes(hdr[0..4].try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(hdr[4..6].try_into().ok()?);
        if len < 16 || off + len > buf.len() {
            return None;
        }
        let payload = &buf[off + 16..off + len];
        off += (len + 3) & !3;
        Some((ty, payload))
    })
}

/// The attributes in `buf`: (type without flags, value).
fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let hdr = buf.get(off..off + 4)?;
        let len = u16::from_ne_bytes([hdr[0], hdr[1]]) as usize;
        let ty = u16::from_ne_bytes([hdr[2], hdr[3]]) & 0x3fff;
        if len < 4 || off + len > buf.len() {
            return None;
        }
        let v = &buf[off + 4..off + len];
        off += (len + 3) & !3;
        Some((ty, v))
    })
}

fn cstr(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// Parse one datagram of rtnetlink notifications; false once `tx` is closed.
pub fn parse_route(buf: &[u8], tx: &UnboundedSender<KernelEvent>) -> bool {
    if buf.is_empty() {
        return tx.send(KernelEvent::Overflow).is_ok();
    }
    for (ty, p) in messages(buf) {
        let ev = match ty {
            // AF_BRIDGE messages are a bridge's per-port state, sent beside
            // the link's own (AF_UNSPEC) message: not a second change.
            RTM_NEWLINK | RTM_DELLINK if p.len() >= 16 && p[0] != libc::AF_BRIDGE as u8 => {
                let flags = u32::from_ne_bytes([p[8], p[9], p[10], p[11]]);
                let mut name = String::new();
                let mut master = None;
                for (t, v) in attrs(&p[16..]) {
                    match t {
                        IFLA_IFNAME => name = cstr(v),
                        IFLA_MASTER if v.len() >= 4 => {
                            master = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]])).filter(|m| *m != 0)
                        }
                        _ => {}
                    }
                }
                KernelEvent::Link { name, gone: ty == RTM_DELLINK, up: flags & IFF_UP != 0, master }
            }
            RTM_DELADDR if p.len() >= 8 => {
                KernelEvent::AddrGone { index: u32::from_ne_bytes([p[4], p[5], p[6], p[7]]) }
            }
            _ => continue,
        };
        if tx.send(ev).is_err() {
            return false;
        }
    }
    true
}

/// Parse one datagram of nf_tables notifications: remember whether the
/// current generation touched table `weft`, and report it at its NEWGEN
/// unless weftd made it. False once `tx` is closed.
pub fn parse_nft(buf: &[u8], touched: &mut bool, tx: &UnboundedSender<KernelEvent>) -> bool {
    if buf.is_empty() {
        return tx.send(KernelEvent::Overflow).is_ok();
    }
    for (ty, p) in messages(buf) {
        if ty >> 8 != NFNL_SUBSYS_NFTABLES || p.len() < 4 {
            continue;
        }
        let body = &p[4..];
        if ty & 0xff == NFT_MSG_NEWGEN {
            let pid = attrs(body)
                .find(|(t, v)| *t == NFTA_GEN_PROC_PID && v.len() >= 4)
                .map(|(_, v)| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
            let foreign = pid.is_none_or(|p| !is_own(p));
            if std::mem::take(touched) && foreign && tx.send(KernelEvent::Nft).is_err() {
                return false;
            }
        } else if p[0] == libc::NFPROTO_INET as u8
            && attrs(body).any(|(t, v)| t == NFTA_ANY_TABLE && cstr(v) == weft_plan::nft::NFT_TABLE)
        {
            *touched = true;
        }
    }
    true
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
