//! The fast path: a UDP query for one of weft's own names (A, AAAA or PTR,
//! class IN, at most an EDNS(0) OPT beside it) is read and answered straight
//! from the wire bytes, without building hickory's message objects. It is
//! the common case inside a network — containers asking for each other — and
//! hickory's general parsing, per-query task and encoder cost several times
//! the table lookup.
//!
//! Anything else — another type or class, a name to forward, EDNS options
//! weft does not speak, a malformed message — returns `false` and goes to the
//! hickory handler, which then answers exactly as before. The answers match
//! the handler's: the question echoed as sent (case included), authoritative,
//! recursion available, TTL [`LOCAL_TTL`], NXDOMAIN for a missing name of
//! ours, NODATA for a name without an address of the asked family, an OPT
//! record when the query had one, and the truncation bit with an empty answer
//! section when the answer does not fit the client's UDP size.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::table::Answer;
use crate::{EDNS_PAYLOAD, Inner, LOCAL_TTL, QueryOutcome};

/// A UDP answer to a client without EDNS (RFC 1035 §4.2.1).
const PLAIN_UDP: usize = 512;
/// Resource record types and the class weft answers here.
const TYPE_A: u16 = 1;
const TYPE_PTR: u16 = 12;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// Header flag bits (third and fourth header bytes).
const QR: u8 = 0x80;
const AA: u8 = 0x04;
const TC: u8 = 0x02;
const RD: u8 = 0x01;
const RA: u8 = 0x80;
const CD: u8 = 0x10;
const NXDOMAIN: u8 = 3;
/// The OPT record weft appends: root owner, type, payload, TTL, no data.
const OPT_LEN: usize = 11;

/// What the fast path needs of a query.
struct Query {
    /// End of the question section in the query.
    question_end: usize,
    qtype: u16,
    /// The name, lower-case and dotted, without the final dot.
    name: String,
    /// The client's EDNS UDP payload size, if it sent an OPT record.
    edns: Option<u16>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Read a query the fast path may answer, or `None`.
fn parse(b: &[u8]) -> Option<Query> {
    if b.len() < 12 {
        return None;
    }
    // A query (QR 0), opcode QUERY, not truncated, no rcode; one question,
    // no answers or authorities, at most the OPT record.
    if b[2] & (QR | 0x78 | TC) != 0 || b[3] & 0x0f != 0 {
        return None;
    }
    let (qd, an, ns, ar) = (u16_at(b, 4)?, u16_at(b, 6)?, u16_at(b, 8)?, u16_at(b, 10)?);
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let mut at = 12;
    let mut name = String::new();
    loop {
        let len = *b.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        // A compression pointer or a label outside letters, digits, '-'
        // and '_' is the general handler's business.
        let label = b.get(at..at + len).filter(|_| len <= 63)?;
        if !label.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_') {
            return None;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.extend(label.iter().map(|c| c.to_ascii_lowercase() as char));
        at += len;
        if name.len() > 253 {
            return None;
        }
    }
    if name.is_empty() {
        return None;
    }
    let qtype = u16_at(b, at)?;
    if !matches!(qtype, TYPE_A | TYPE_AAAA | TYPE_PTR) || u16_at(b, at + 2)? != CLASS_IN {
        return None;
    }
    let question_end = at + 4;
    let mut edns = None;
    at = question_end;
    if ar == 1 {
        // OPT: root owner, type 41, class = payload, TTL = extended rcode,
        // version (0 only: others get BADVERS from the handler) and flags.
        if *b.get(at)? != 0 || u16_at(b, at + 1)? != TYPE_OPT || *b.get(at + 5)? != 0 || *b.get(at + 6)? != 0 {
            return None;
        }
        edns = Some(u16_at(b, at + 3)?);
        at += 11 + u16_at(b, at + 9)? as usize;
    }
    (at == b.len()).then_some(Query { question_end, qtype, name, edns })
}

/// The address a reverse name stands for (`4.3.2.1.in-addr.arpa`, or the
/// 32 nibbles of `ip6.arpa`); a partial one is left to the handler.
fn arpa_address(name: &str) -> Option<IpAddr> {
    if let Some(v4) = name.strip_suffix(".in-addr.arpa") {
        let mut o: Vec<u8> = v4.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
        if o.len() != 4 {
            return None;
        }
        o.reverse();
        return Some(IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])));
    }
    let v6 = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = v6
        .split('.')
        .map(|p| (p.len() == 1).then(|| u8::from_str_radix(p, 16).ok()).flatten())
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let bits = nibbles.iter().rev().fold(0u128, |acc, n| (acc << 4) | u128::from(*n));
    Some(IpAddr::V6(Ipv6Addr::from(bits)))
}

/// Append `name` in wire form (uncompressed); `false` if a label cannot be
/// one.
fn push_name(out: &mut Vec<u8>, name: &str) -> bool {
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return false;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    true
}

/// The data of one answer record.
enum Rdata {
    Address(IpAddr),
    Ptr(String),
}

impl Rdata {
    /// Append the record, its owner being the question's name (a pointer to
    /// it); `false` (and nothing appended) if it cannot be encoded.
    fn push(&self, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        let rtype = match self {
            Rdata::Address(IpAddr::V4(_)) => TYPE_A,
            Rdata::Address(IpAddr::V6(_)) => TYPE_AAAA,
            Rdata::Ptr(_) => TYPE_PTR,
        };
        out.extend_from_slice(&[0xc0, 12]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&LOCAL_TTL.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        let data = out.len();
        let ok = match self {
            Rdata::Address(IpAddr::V4(a)) => {
                out.extend_from_slice(&a.octets());
                true
            }
            Rdata::Address(IpAddr::V6(a)) => {
                out.extend_from_slice(&a.octets());
                true
            }
            Rdata::Ptr(name) => push_name(out, name),
        };
        if !ok {
            out.truncate(start);
            return false;
        }
        let len = (out.len() - data) as u16;
        out[data - 2..data].copy_from_slice(&len.to_be_bytes());
        true
    }
}

/// Answer `query` from `client` on `network` into `out` if the fast path
/// may; `false` leaves it to the general handler (and `out` unspecified).
pub(crate) fn answer(inner: &Inner, network: &str, query: &[u8], client: IpAddr, out: &mut Vec<u8>) -> bool {
    let Some(q) = parse(query) else { return false };
    let found = {
        let table = inner.table.read().unwrap_or_else(|p| p.into_inner());
        if q.qtype == TYPE_PTR {
            match arpa_address(&q.name) {
                Some(addr) => table.lookup_addr(network, client, addr),
                None => return false,
            }
        } else {
            table.lookup_name(network, client, &q.name)
        }
    };
    let limit = match q.edns {
        Some(p) => p.clamp(PLAIN_UDP as u16, EDNS_PAYLOAD) as usize,
        None => PLAIN_UDP,
    } - if q.edns.is_some() { OPT_LEN } else { 0 };
    out.clear();
    out.extend_from_slice(&query[..q.question_end]);
    out[2] = QR | AA | (query[2] & RD);
    out[3] = RA | (query[3] & CD);
    let rdata: Vec<Rdata> = match found {
        Answer::Forward(_) => return false,
        Answer::NxDomain => {
            out[3] |= NXDOMAIN;
            Vec::new()
        }
        Answer::Names(names) => {
            if names.is_empty() {
                out[3] |= NXDOMAIN;
            }
            names.into_iter().map(Rdata::Ptr).collect()
        }
        // A name without an address of the asked family is NODATA: NOERROR
        // and no answers.
        Answer::Addresses(addrs) => addrs
            .into_iter()
            .filter(|a| if q.qtype == TYPE_A { a.is_ipv4() } else { a.is_ipv6() })
            .map(Rdata::Address)
            .collect(),
    };
    let mut count = 0u16;
    for r in &rdata {
        let before = out.len();
        if !r.push(out) {
            continue;
        }
        if out.len() > limit {
            // As many as fit, and the truncation bit: the client asks again
            // over TCP, where hickory answers in full.
            out.truncate(before);
            out[2] |= TC;
            break;
        }
        count += 1;
    }
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out[6..8].copy_from_slice(&count.to_be_bytes());
    if q.edns.is_some() {
        out[11] = 1;
        let [hi, lo] = EDNS_PAYLOAD.to_be_bytes();
        out.extend_from_slice(&[0, 0, TYPE_OPT as u8, hi, lo, 0, 0, 0, 0, 0, 0]);
    }
    inner.counts.add(if out[3] & 0x0f == NXDOMAIN { QueryOutcome::NxDomain } else { QueryOutcome::Local });
    true
}

#[cfg(test)]
mod tests;
