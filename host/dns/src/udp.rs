//! Serving one UDP socket. A thread of its own blocks in `recvmmsg` (taking
//! every datagram queued, up to [`BATCH`], in one call), tries each on the
//! fast path ([`crate::fast`]), and sends the answers of the batch in one
//! `sendmmsg`; the rest (forwarding, other types, malformed messages) is
//! parsed by hickory and handed to the network's [`NetHandler`] as a task on
//! the daemon's runtime, as hickory's server would.
//!
//! Why a thread and not a task, and why batches: measured with `weft-bench
//! dns` (docs/BENCHMARKS.md), a tokio task per socket answered no more
//! queries than hickory's own server (the readiness round trips through the
//! runtime cost more than the answer); a blocking `recv_from`/`send_to`
//! thread reached ~1.55x aardvark-dns, and taking and answering whole
//! batches ~2.1x, at the load generator's ceiling.
//!
//! Only the thread holds the socket for good (the handler's tasks hold a
//! weak reference to send their answer), so stopping the listener closes
//! the socket at once and the address can be bound again.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use tracing::warn;

use crate::handler::{NetHandler, servfail};
use crate::{QueryOutcome, fast};

/// Queries on the general path at once per socket; more are dropped (the
/// client retries), so a flood of forwarded names cannot grow without bound.
const MAX_SLOW: usize = 1024;
/// The largest datagram read.
const MAX_QUERY: usize = 4096;

/// One UDP socket being served.
pub(crate) struct Listener {
    sock: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    /// Bind `addr` and serve it with `handler`; general-path queries run on
    /// the current tokio runtime.
    pub(crate) fn start(addr: SocketAddr, handler: Arc<NetHandler>) -> std::io::Result<Listener> {
        let sock = Arc::new(UdpSocket::bind(addr)?);
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Handle::current();
        let (s, flag) = (sock.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("weft-dns {addr}"))
            .spawn(move || serve(s, handler, flag, runtime))?;
        Ok(Listener { sock, stop, thread: Some(thread) })
    }

    /// The bound address.
    #[cfg(test)]
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Stop serving; the socket is closed when this returns.
    pub(crate) async fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        // Shutting the receive side down wakes the blocked `recv_from`
        // (Linux does so for unconnected UDP sockets too, reporting
        // ENOTCONN here, which is expected).
        let _ = nix::sys::socket::shutdown(self.sock.as_raw_fd(), nix::sys::socket::Shutdown::Read);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Datagrams read (and answers sent) per system call.
const BATCH: usize = 32;

fn serve(sock: Arc<UdpSocket>, handler: Arc<NetHandler>, stop: Arc<AtomicBool>, runtime: tokio::runtime::Handle) {
    let fd = sock.as_raw_fd();
    let slow = Arc::new(AtomicUsize::new(0));
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; MAX_QUERY]).collect();
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1232)).collect();
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut got: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(BATCH);
    let mut to: Vec<Option<SockaddrStorage>> = Vec::with_capacity(BATCH);
    loop {
        got.clear();
        {
            // Block for the first datagram, then take whatever else is
            // queued: under load one call reads many queries.
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
            match recvmmsg(fd, &mut recv_headers, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                Ok(msgs) => got.extend(msgs.map(|m| (m.bytes, m.address.and_then(std_addr)))),
                Err(Errno::EINTR) => {}
                // ICMP errors of earlier answers surface here; the socket
                // itself stays usable.
                Err(e) => warn!(error = %e, "DNS receive"),
            }
        }
        if stop.load(Ordering::Acquire) {
            return;
        }
        to.clear();
        for (buf, (n, src)) in bufs.iter().zip(&got) {
            let Some(src) = src.filter(|s| s.port() != 0) else { continue };
            let query = &buf[..*n];
            if fast::answer(&handler.inner, &handler.network_id, query, src.ip(), &mut outs[to.len()]) {
                to.push(Some(SockaddrStorage::from(src)));
                continue;
            }
            if slow.fetch_add(1, Ordering::AcqRel) >= MAX_SLOW {
                slow.fetch_sub(1, Ordering::AcqRel);
                handler.inner.counts.add(QueryOutcome::Refused);
                continue;
            }
            let (raw, h, weak, slow) = (query.to_vec(), handler.clone(), Arc::downgrade(&sock), slow.clone());
            runtime.spawn(async move {
                general(raw, src, h, weak).await;
                slow.fetch_sub(1, Ordering::AcqRel);
            });
        }
        if !to.is_empty() {
            let iovs: Vec<[IoSlice<'_>; 1]> = outs[..to.len()].iter().map(|o| [IoSlice::new(o)]).collect();
            // An answer the kernel will not take is lost like a dropped
            // datagram; the client asks again.
            let _ = sendmmsg(fd, &mut send_headers, iovs.iter(), &to, [], MsgFlags::empty());
        }
    }
}

fn std_addr(a: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// The general path: hickory parses the query and the handler answers it.
async fn general(raw: Vec<u8>, src: SocketAddr, handler: Arc<NetHandler>, sock: Weak<UdpSocket>) {
    let header = raw.get(..12).and_then(|h| Header::read(&mut BinDecoder::new(h)).ok());
    let Some(header) = header else { return };
    if header.metadata.message_type == MessageType::Response {
        // Never answer an answer (reflection).
        return;
    }
    let reply = Reply { dst: src, sock };
    match Request::from_bytes(raw, src, Protocol::Udp) {
        Ok(request) => {
            handler.handle_request::<_, TokioTime>(&request, reply).await;
        }
        Err(_) => {
            handler.inner.counts.add(QueryOutcome::Refused);
            let _ = reply.send(&error_header(header.metadata.id, header.metadata.op_code, ResponseCode::FormErr));
        }
    }
}

/// A bare answer header carrying `code`.
fn error_header(id: u16, op: OpCode, code: ResponseCode) -> Vec<u8> {
    let mut m = Metadata::new(id, MessageType::Response, op);
    m.response_code = code;
    let header = Header { metadata: m, counts: HeaderCounts::default() };
    header.to_bytes().unwrap_or_default()
}

/// Where the handler's answer goes: encoded for UDP (the client's EDNS size,
/// else 512 bytes, truncated as hickory truncates) and sent from the socket
/// the query came in on, if it is still served.
#[derive(Clone)]
struct Reply {
    dst: SocketAddr,
    sock: Weak<UdpSocket>,
}

impl Reply {
    fn send(&self, bytes: &[u8]) -> Result<(), NetError> {
        let sock = self.sock.upgrade().ok_or(NetError::from("DNS socket closed"))?;
        sock.send_to(bytes, self.dst)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Reply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (id, op) = (response.metadata().id, response.metadata().op_code);
        let max = response.edns().map_or(512, |e| e.max_payload().max(512));
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(e) => {
                warn!(error = %e, "encoding a DNS answer");
                bytes = error_header(id, op, ResponseCode::ServFail);
                servfail()
            }
        };
        self.send(&bytes)?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Counts, DnsConfig, Inner};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_then_stops_and_frees_the_address() {
        let inner = Arc::new(Inner {
            table: Default::default(),
            config: DnsConfig { upstreams: vec![], timeout: Duration::from_millis(100) },
            counts: Counts::default(),
        });
        inner.table.write().unwrap_or_else(|p| p.into_inner()).add_network("n1", "front", &[], None);
        let handler = Arc::new(NetHandler { inner: inner.clone(), network_id: "n1".into() });
        let l = Listener::start("127.0.0.1:0".parse().unwrap(), handler.clone()).unwrap();
        let addr = l.local_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // A single-label name of no endpoint: NXDOMAIN on the fast path.
        let q = [0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'x', 0, 0, 1, 0, 1];
        let mut buf = [0u8; 512];
        for (query, rcode) in [(&q[..], 3), (&q[..12], 1)] {
            client.send_to(query, addr).unwrap();
            let n = client.recv(&mut buf).unwrap();
            assert!(n >= 12 && buf[..2] == [0xab, 0xcd] && buf[2] & 0x80 != 0, "an answer to the query");
            assert_eq!(buf[3] & 0x0f, rcode, "NXDOMAIN, then FORMERR from the general path for a bare header");
        }
        // Stopping wakes the blocked receive (else this would never return).
        tokio::time::timeout(Duration::from_secs(10), l.stop()).await.expect("the listener stops");
        // The address is free again.
        let again = Listener::start(addr, handler).unwrap();
        again.stop().await;
    }
}
