//! nf_tables set elements over netlink: the attach and detach path adds or
//! deletes an endpoint's elements in one batch (one atomic transaction)
//! without starting `nft`, which costs a process and a ruleset parse per
//! call. Whole-table renders (network changes, reconcile) still go through
//! `nft -f` (see `nft.rs`), which parses weft's rules once.
//!
//! The wire format is nfnetlink's: a batch begin message, one
//! NEWSETELEM/DELSETELEM message per set (table, set, a nested list of
//! elements, each a key and, in maps, a value — raw bytes in nf_tables'
//! register layout), a batch end message. Every set message asks for an
//! acknowledgement; the kernel answers each (0 or an errno) and applies all
//! or none.

use std::collections::HashMap;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
use weft_plan::nft::{Change, Element, NFT_FAMILY, NFT_TABLE, by_set};

use crate::error::KernelError;

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;
/// Most bytes of elements in one message (an attribute's length is u16).
const MAX_LIST_BYTES: usize = 60_000;

/// Append attribute `ty` with `payload`, padded to 4 bytes.
fn attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
    out.extend(len.to_ne_bytes());
    out.extend(ty.to_ne_bytes());
    out.extend(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn nested(out: &mut Vec<u8>, ty: u16, inner: &[u8]) {
    attr(out, ty | NLA_F_NESTED, inner);
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One netlink message: header, nfgenmsg, attributes.
fn message(out: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) {
    let len = u32::try_from(16 + 4 + attrs.len()).unwrap_or(u32::MAX);
    out.extend(len.to_ne_bytes());
    out.extend(ty.to_ne_bytes());
    out.extend(flags.to_ne_bytes());
    out.extend(seq.to_ne_bytes());
    out.extend(0u32.to_ne_bytes());
    out.extend([family, 0]);
    out.extend(res_id.to_be_bytes());
    out.extend(attrs);
}

fn value(fields: &[weft_plan::nft::Field]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for f in fields {
        f.to_bytes(&mut bytes);
    }
    let mut v = Vec::new();
    attr(&mut v, NFTA_DATA_VALUE, &bytes);
    v
}

/// The batch for `change` of `elements`, and which set each acknowledged
/// sequence number belongs to.
pub(crate) fn encode(change: Change, elements: &[Element], seq0: u32) -> (Vec<u8>, HashMap<u32, String>) {
    let mut buf = Vec::new();
    let mut sets = HashMap::new();
    message(&mut buf, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq0, 0, NFNL_SUBSYS_NFTABLES, &[]);
    let (ty, flags) = match change {
        Change::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE),
        Change::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
    };
    let mut seq = seq0;
    for (set, els) in by_set(elements) {
        // An attribute's length is 16 bits: large sets of elements (a
        // published range of thousands of ports) go in several messages of
        // the same batch, still one transaction.
        let mut lists = vec![Vec::new()];
        for e in els {
            let mut el = Vec::new();
            nested(&mut el, NFTA_SET_ELEM_KEY, &value(&e.key));
            if !e.key_end.is_empty() {
                nested(&mut el, NFTA_SET_ELEM_KEY_END, &value(&e.key_end));
            }
            if !e.data.is_empty() {
                nested(&mut el, NFTA_SET_ELEM_DATA, &value(&e.data));
            }
            if lists.last().is_some_and(|l| l.len() + el.len() + 4 > MAX_LIST_BYTES) {
                lists.push(Vec::new());
            }
            if let Some(list) = lists.last_mut() {
                nested(list, NFTA_LIST_ELEM, &el);
            }
        }
        for list in lists {
            let mut attrs = Vec::new();
            attr(&mut attrs, NFTA_SET_ELEM_LIST_TABLE, &cstr(NFT_TABLE));
            attr(&mut attrs, NFTA_SET_ELEM_LIST_SET, &cstr(set));
            nested(&mut attrs, NFTA_SET_ELEM_LIST_ELEMENTS, &list);
            seq += 1;
            message(&mut buf, (NFNL_SUBSYS_NFTABLES << 8) | ty, flags, seq, NFPROTO_INET, 0, &attrs);
            sets.insert(seq, set.to_owned());
        }
    }
    message(&mut buf, NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 1, 0, NFNL_SUBSYS_NFTABLES, &[]);
    (buf, sets)
}

/// weftd's nf_tables socket, opened once in its namespace and kept.
///
/// Kept, not opened per batch: closing a netfilter socket while the kernel
/// still has a committed transaction to release (any element deletion)
/// makes the close wait for that release, an RCU grace period (~6–12 ms,
/// measured with `strace -T` on `nft delete element`: the send returns in
/// 76 µs, the close takes 12 ms). On a socket that stays open the release
/// runs in the kernel's worker, and a deletion costs what an addition does.
pub struct NftSocket {
    /// The socket and the next sequence number; None after an I/O error
    /// (reopened by the next batch, so no stale answer is read as ours).
    inner: std::sync::Mutex<Option<(Socket, u32)>>,
}

impl NftSocket {
    /// Open the socket in the calling thread's namespace.
    pub fn open() -> Result<NftSocket, KernelError> {
        let sock = open_socket().map_err(|e| KernelError::new("nft socket", format!("{NFT_FAMILY} {NFT_TABLE}"), e))?;
        Ok(NftSocket { inner: std::sync::Mutex::new(Some((sock, 1))) })
    }

    /// Add or delete `elements` in one transaction.
    pub fn apply(&self, change: Change, elements: &[Element]) -> Result<(), KernelError> {
        let verb = match change {
            Change::Add => "nft add element",
            Change::Delete => "nft delete element",
        };
        let table = format!("{NFT_FAMILY} {NFT_TABLE}");
        let fail = |e: std::io::Error| KernelError::new(verb, &table, e);
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (sock, seq) = match guard.take() {
            Some(s) => s,
            None => (open_socket().map_err(fail)?, 1),
        };
        let (batch, pending) = encode(change, elements, seq);
        let next = seq.wrapping_add(pending.len() as u32 + 2).max(1);
        let answer = exchange(&sock, &batch, pending, verb, &table);
        // An I/O error may leave answers unread: that socket is dropped.
        if !matches!(answer, Err(Exchange::Io(_))) {
            *guard = Some((sock, next));
        }
        match answer {
            Ok(()) => Ok(()),
            Err(Exchange::Io(e)) => Err(fail(e)),
            Err(Exchange::Refused(e)) => Err(e),
        }
    }
}

fn open_socket() -> std::io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    // Acknowledgements carry only the header of what they acknowledge.
    sock.set_cap_ack(true)?;
    Ok(sock)
}

/// Why an exchange failed: the socket, or the kernel refusing a message.
enum Exchange {
    Io(std::io::Error),
    Refused(KernelError),
}

/// Send `batch` and read until every message of `pending` is answered;
/// answers to other sequence numbers (none, on a healthy socket) are skipped.
fn exchange(
    sock: &Socket,
    batch: &[u8],
    mut pending: HashMap<u32, String>,
    verb: &str,
    table: &str,
) -> Result<(), Exchange> {
    // A batch larger than the default send buffer (thousands of ports) is
    // sent whole: it is one transaction. weftd runs as root.
    if batch.len() > 128 * 1024 {
        nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::SndBufForce, &(batch.len() * 2))
            .map_err(|e| Exchange::Io(e.into()))?;
    }
    sock.send(batch, 0).map_err(Exchange::Io)?;
    let mut first_error: Option<KernelError> = None;
    while !pending.is_empty() {
        let (msg, _) = sock.recv_from_full().map_err(Exchange::Io)?;
        let mut at = 0;
        while at + 16 <= msg.len() {
            let word = |i: usize| u32::from_ne_bytes([msg[i], msg[i + 1], msg[i + 2], msg[i + 3]]);
            let len = word(at) as usize;
            let ty = u16::from_ne_bytes([msg[at + 4], msg[at + 5]]);
            let seq = word(at + 8);
            if len < 16 || at + len > msg.len() {
                break;
            }
            if ty == NLMSG_ERROR && len >= 20 {
                let errno = -i32::from_ne_bytes([msg[at + 16], msg[at + 17], msg[at + 18], msg[at + 19]]);
                if let Some(set) = pending.remove(&seq)
                    && errno != 0
                    && first_error.is_none()
                {
                    let reason = std::io::Error::from_raw_os_error(errno).to_string();
                    first_error = Some(KernelError {
                        errno: Some(errno),
                        ..KernelError::new(verb, format!("{table} {set}"), reason)
                    });
                }
            }
            at += len.next_multiple_of(4);
        }
    }
    first_error.map_or(Ok(()), |e| Err(Exchange::Refused(e)))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use weft_model::ports::Proto;
    use weft_plan::nft::Field;

    use super::*;

    #[test]
    fn a_map_element_is_laid_out_in_registers() {
        let e = Element {
            set: "pub4_any".into(),
            key: vec![Field::Proto(Proto::Tcp), Field::Port(8080)],
            key_end: vec![],
            data: vec![
                Field::Addr("10.0.0.2".parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]))),
                Field::Port(80),
            ],
        };
        let (buf, sets) = encode(Change::Add, std::slice::from_ref(&e), 7);
        assert_eq!(sets.get(&8).map(String::as_str), Some("pub4_any"));
        // Key: proto in a register of its own, then the port in network order.
        let key = [6u8, 0, 0, 0, 0x1f, 0x90, 0, 0];
        assert!(buf.windows(key.len()).any(|w| w == key));
        let data = [10u8, 0, 0, 2, 0, 80, 0, 0];
        assert!(buf.windows(data.len()).any(|w| w == data));
        // Begin, one set message, end; lengths add up to the buffer.
        let mut at = 0;
        let mut types = Vec::new();
        while at < buf.len() {
            let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            types.push(u16::from_ne_bytes([buf[at + 4], buf[at + 5]]));
            at += len;
        }
        assert_eq!(at, buf.len());
        assert_eq!(
            types,
            vec![NFNL_MSG_BATCH_BEGIN, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM, NFNL_MSG_BATCH_END]
        );

        // 10,000 elements: several messages of one set, each under the
        // attribute length limit, in one batch.
        let many: Vec<Element> = (0..10_000u16)
            .map(|p| Element { key: vec![Field::Proto(Proto::Tcp), Field::Port(p)], ..e.clone() })
            .collect();
        let (buf, sets) = encode(Change::Add, &many, 0);
        assert!(sets.len() > 1 && sets.values().all(|s| s == "pub4_any"));
        let mut at = 0;
        while at < buf.len() {
            let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            assert!(len < 65_536);
            at += len;
        }
    }
}
