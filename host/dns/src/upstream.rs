//! Forwarding a query to upstream resolvers: each in turn, with a timeout,
//! over the transport the client used (a truncated UDP answer is passed on
//! as is, so the client retries over TCP, which is then forwarded over TCP).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;
use tracing::debug;

/// Largest DNS message over UDP we accept from an upstream.
const MAX_UDP: usize = 65535;

/// Send `query` (wire bytes) to each upstream in turn until one answers.
pub async fn forward(query: &[u8], tcp: bool, upstreams: &[SocketAddr], wait: Duration) -> Option<Message> {
    for up in upstreams {
        let attempt = if tcp { over_tcp(query, *up, wait).await } else { over_udp(query, *up, wait).await };
        match attempt {
            Ok(m) => return Some(m),
            Err(e) => debug!(upstream = %up, error = %e, "upstream failed; trying the next"),
        }
    }
    None
}

async fn over_udp(query: &[u8], up: SocketAddr, wait: Duration) -> std::io::Result<Message> {
    let bind: SocketAddr = if up.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(up).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; MAX_UDP];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
        // Ignore stray datagrams that are not the answer to this query.
        if let Ok(m) = Message::from_vec(&buf[..n])
            && query.len() >= 2
            && m.metadata.id == u16::from_be_bytes([query[0], query[1]])
        {
            return Ok(m);
        }
    }
}

async fn over_tcp(query: &[u8], up: SocketAddr, wait: Duration) -> std::io::Result<Message> {
    let work = async {
        let mut s = TcpStream::connect(up).await?;
        let len = u16::try_from(query.len()).map_err(|_| std::io::Error::other("query too long"))?;
        s.write_all(&len.to_be_bytes()).await?;
        s.write_all(query).await?;
        let n = s.read_u16().await? as usize;
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).await?;
        Message::from_vec(&buf).map_err(|e| std::io::Error::other(e.to_string()))
    };
    timeout(wait, work).await.map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))?
}
