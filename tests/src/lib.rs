//! Test harness for weft's end-to-end tests. Each test gets its own "host"
//! network namespace with its own weftd (own socket and state dir), so tests
//! run in parallel and never touch the machine's root namespace. Namespaces
//! are named `wt-<tag>-<pid>-<n>` and deleted on drop, also when a test
//! fails. Traffic goes only between namespaces a test made.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod engines;
pub mod metrics;
pub mod pki;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use tonic::transport::Channel;
use weft_grpc::client::{
    EndpointServiceClient, ModuleServiceClient, NetworkServiceClient, PolicyServiceClient, connect_unix,
};
use weft_grpc::pb;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The directory holding weftd and weft (target/debug), found from the test
/// binary's location (target/debug/deps/...).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // Test binaries live in target/<profile>/deps, other binaries (the
    // benchmarks) beside weftd in target/<profile>.
    let beside = exe.parent().unwrap().to_path_buf();
    let dir = if beside.join("weftd").exists() { beside } else { beside.parent().unwrap().to_path_buf() };
    for b in ["weftd", "weft"] {
        assert!(
            dir.join(b).exists(),
            "{} missing: build the binaries first (`cargo build --workspace --bins`, or run `cargo xtask test`)",
            dir.join(b).display()
        );
    }
    dir
}

/// The first ```LANG block after `marker` in `doc` (a README or docs page
/// whose configurations the tests run as written).
pub fn block_after(doc: &str, marker: &str, lang: &str) -> String {
    let rest = &doc[doc.find(marker).unwrap_or_else(|| panic!("no {marker:?} in the document"))..];
    let open = format!("```{lang}\n");
    let start = rest.find(&open).unwrap_or_else(|| panic!("no {lang} block after {marker:?}")) + open.len();
    rest[start..][..rest[start..].find("\n```").expect("the block's end")].to_owned()
}

/// docs/orchestrators.md.
pub const ORCHESTRATORS: &str = include_str!("../../docs/orchestrators.md");

/// A conflist of docs/orchestrators.md, the socket made `socket`.
pub fn documented_conflist(marker: &str, socket: &std::path::Path) -> serde_json::Value {
    let text = block_after(ORCHESTRATORS, marker, "json").replace("/run/weft/weft.sock", &socket.display().to_string());
    serde_json::from_str(&text).unwrap()
}

/// Run a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Run a command in namespace `ns`, returning its output (not checked).
pub fn in_ns(ns: &str, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", ns]).args(args).output().unwrap()
}

/// Upload `bytes` to the weftd at `socket` as `tenant`'s module `name` of
/// `kind`, in 1 MiB chunks.
pub async fn upload_to(
    socket: PathBuf,
    tenant: &str,
    name: &str,
    kind: &str,
    bytes: &[u8],
) -> Result<pb::Module, tonic::Status> {
    use pb::upload_module_request::Part;
    let header = pb::ModuleHeader { tenant: tenant.into(), name: name.into(), kind: kind.into(), dry_run: false };
    let mut parts = vec![pb::UploadModuleRequest { part: Some(Part::Header(header)) }];
    parts.extend(bytes.chunks(1 << 20).map(|c| pb::UploadModuleRequest { part: Some(Part::Chunk(c.to_vec())) }));
    ModuleServiceClient::new(connect_unix(socket).await.unwrap())
        .upload_module(tokio_stream::iter(parts))
        .await
        .map(|r| r.into_inner())
}

/// A built component: `target/modules/NAME.wasm` (built-ins) or
/// `target/test-modules/NAME.wasm` (hostile and test-only ones).
pub fn component(name: &str) -> Vec<u8> {
    let target = bin_dir().parent().unwrap().to_path_buf();
    let p = [target.join("modules"), target.join("test-modules")]
        .into_iter()
        .map(|d| d.join(format!("{name}.wasm")))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name}.wasm not built: run `cargo xtask build-policies`"));
    std::fs::read(p).unwrap()
}

/// A network namespace made by the test and deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str, role: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("wt-{tag}-{}-{n}-{role}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        Netns { name }
    }
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
    /// Run a command inside.
    pub fn exec(&self, args: &[&str]) -> Output {
        in_ns(&self.name, args)
    }
    /// Names of the links inside.
    pub fn links(&self) -> Vec<String> {
        let out = self.exec(&["ip", "-j", "link", "show"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        v.as_array()
            .map(|a| a.iter().filter_map(|l| l["ifname"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }
    /// True if a ping to `addr` is answered within a few tries.
    pub fn ping(&self, addr: &str) -> bool {
        (0..3).any(|_| self.exec(&["ping", "-c", "1", "-W", "1", addr]).status.success())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Run `f` on a fresh thread that has entered namespace `ns` (sockets it
/// opens live there).
pub fn on_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap();
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// A TCP server in `ns` on `addr` that accepts one connection, answers
/// "hello" and returns the peer's address.
pub fn tcp_server(ns: &str, addr: &str) -> std::thread::JoinHandle<Option<SocketAddr>> {
    let addr: SocketAddr = addr.parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = on_ns(ns, move || {
        let l = TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, peer)) => {
                    let _ = s.write_all(b"hello");
                    return Some(peer);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        None
    });
    rx.recv().unwrap();
    h
}

/// An HTTP/1.0 GET of `/` at `addr` from `ns`: the whole response.
pub fn http_get(ns: &str, addr: &str) -> Result<String, String> {
    http_get_path(ns, addr, "/")
}

/// An HTTP/1.0 GET of `path` at `addr` from `ns`: the whole response.
pub fn http_get_path(ns: &str, addr: &str, path: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    on_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
        Ok(buf)
    })
    .join()
    .unwrap()
}

/// Connect from `ns` to `addr` over TCP and read the greeting.
pub fn tcp_connect(ns: &str, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    on_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
        Ok(buf)
    })
    .join()
    .unwrap()
}

/// A test host: a namespace running weftd with its own socket and state.
pub struct Host {
    pub ns: Netns,
    pub dir: PathBuf,
    pub tag: String,
    weftd: Option<Child>,
    args: Vec<String>,
}

impl Host {
    pub fn new(tag: &str) -> Host {
        Host::with_args(tag, &[])
    }

    /// A host whose weftd gets `args` on top of the test defaults.
    pub fn with_args(tag: &str, args: &[&str]) -> Host {
        Host::configured(tag, None, args)
    }

    /// A host whose weftd reads the configuration file `toml` (written as
    /// `weftd.toml` in the host's directory; [`Host::config_path`]).
    pub fn with_config(tag: &str, toml: &str, args: &[&str]) -> Host {
        Host::configured(tag, Some(toml), args)
    }

    /// A host whose weftd is not started yet ([`Host::start`]): the test
    /// wires the namespace first (an underlay, say).
    pub fn unstarted(tag: &str, args: &[&str]) -> Host {
        Host::made(tag, None, args)
    }

    /// Add arguments for the next [`Host::start`].
    pub fn add_args(&mut self, args: &[String]) {
        self.args.extend(args.iter().cloned());
    }

    /// Kill weftd with SIGKILL, mid-whatever (kernel state stays).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.weftd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn configured(tag: &str, toml: Option<&str>, args: &[&str]) -> Host {
        let mut h = Host::made(tag, toml, args);
        h.start();
        h
    }

    fn made(tag: &str, toml: Option<&str>, args: &[&str]) -> Host {
        let ns = Netns::new(tag, "host");
        let dir = std::env::temp_dir().join(format!("weft-test-{}", ns.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if let Some(toml) = toml {
            let path = dir.join("weftd.toml");
            std::fs::write(&path, toml).unwrap();
            args.extend(["--config".to_owned(), path.display().to_string()]);
        }
        // A host has loopback up (the TLS listener's tests use 127.0.0.1).
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        Host { ns, dir, tag: tag.to_owned(), weftd: None, args }
    }

    /// The configuration file [`Host::with_config`] wrote.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("weftd.toml")
    }

    /// weftd's pid.
    pub fn pid(&self) -> Option<u32> {
        self.weftd.as_ref().map(Child::id)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("weft.sock")
    }

    /// Start weftd inside the host namespace and wait for its socket.
    pub fn start(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Start weftd inside the host namespace; do not wait.
    pub fn spawn(&mut self) {
        assert!(self.weftd.is_none(), "weftd already running");
        let _ = std::fs::remove_file(self.socket());
        let log = File::options().create(true).append(true).open(self.dir.join("weftd.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name])
            .arg(bin_dir().join("weftd"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .args(["--reconcile-interval-secs", "0"])
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.weftd = Some(child);
    }

    /// Wait until weftd's socket answers (it panics if weftd exited).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            if let Some(c) = self.weftd.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("weftd exited ({status}) at start:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "weftd did not open its socket:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop weftd with SIGTERM (kernel state is left in place).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.weftd.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("weftd.log")).unwrap_or_default()
    }

    /// A container namespace belonging to this test.
    pub fn container(&self, role: &str) -> Netns {
        Netns::new(&self.tag, role)
    }

    pub async fn channel(&self) -> Channel {
        connect_unix(self.socket()).await.unwrap()
    }
    pub async fn networks(&self) -> NetworkServiceClient<Channel> {
        NetworkServiceClient::new(self.channel().await)
    }
    pub async fn endpoints(&self) -> EndpointServiceClient<Channel> {
        EndpointServiceClient::new(self.channel().await)
    }
    pub async fn policies(&self) -> PolicyServiceClient<Channel> {
        PolicyServiceClient::new(self.channel().await)
    }
    pub async fn modules(&self) -> ModuleServiceClient<Channel> {
        ModuleServiceClient::new(self.channel().await)
    }

    /// Upload `bytes` as `tenant`'s module `name` of `kind`.
    pub async fn upload(
        &self,
        tenant: &str,
        name: &str,
        kind: &str,
        bytes: &[u8],
    ) -> Result<pb::Module, tonic::Status> {
        upload_to(self.socket(), tenant, name, kind, bytes).await
    }

    /// Create a network with the given subnets.
    pub async fn create_network(&self, name: &str, subnets: &[&str]) -> Result<pb::Network, tonic::Status> {
        let req = pb::CreateNetworkRequest {
            name: name.into(),
            subnets: subnets.iter().map(|s| pb::Subnet { subnet: (*s).into(), ..Default::default() }).collect(),
            ..Default::default()
        };
        self.networks().await.create_network(req).await.map(|r| r.into_inner())
    }

    /// Attach namespace `ns` to `network` as `name`.
    pub async fn attach(&self, network: &str, name: &str, ns: &Netns) -> Result<pb::Endpoint, tonic::Status> {
        let req = pb::AttachEndpointRequest {
            network: network.into(),
            name: name.into(),
            netns: ns.path(),
            ..Default::default()
        };
        self.endpoints().await.attach_endpoint(req).await.map(|r| r.into_inner())
    }

    /// Link an "outside" namespace to the host namespace: host side
    /// `198.18.<n>.1/24` and `fd00:198:<n>::1/64`, outside `.2` and `::2`
    /// (only inside this test's namespaces). Returns the outside namespace.
    pub fn outside(&self, n: u8) -> Netns {
        let out = self.container("out");
        let host_if = format!("wtup{n}");
        // New links skip IPv6 duplicate address detection, so the first
        // packets are not held back by tentative addresses.
        for ns in [&self.ns.name, &out.name] {
            sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
        }
        sh(&[
            "ip",
            "-n",
            &self.ns.name,
            "link",
            "add",
            &host_if,
            "type",
            "veth",
            "peer",
            "name",
            "wtdown",
            "netns",
            &out.name,
        ]);
        sh(&["ip", "-n", &self.ns.name, "addr", "add", &format!("198.18.{n}.1/24"), "dev", &host_if]);
        sh(&["ip", "-n", &self.ns.name, "link", "set", &host_if, "up"]);
        sh(&["ip", "-n", &out.name, "addr", "add", &format!("198.18.{n}.2/24"), "dev", "wtdown"]);
        sh(&["ip", "-n", &out.name, "link", "set", "wtdown", "up"]);
        sh(&["ip", "-n", &out.name, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &self.ns.name, "addr", "add", &format!("fd00:198:{n}::1/64"), "dev", &host_if, "nodad"]);
        sh(&["ip", "-n", &out.name, "addr", "add", &format!("fd00:198:{n}::2/64"), "dev", "wtdown", "nodad"]);
        sh(&["ip", "-n", &self.ns.name, "link", "set", "lo", "up"]);
        out
    }

    /// Names of the links in the host namespace.
    pub fn host_links(&self) -> Vec<String> {
        self.ns.links()
    }

    /// The links weftd retired (detached endpoints' host veths, down and in
    /// its link group) and has not deleted yet.
    pub fn retired_links(&self) -> Vec<String> {
        let group = weft_plan::RETIRED_GROUP.to_string();
        let out = self.ns.exec(&["ip", "-o", "link", "show", "group", &group]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n).to_owned()))
            .collect()
    }

    /// Wait until weftd has deleted every link it retired: a detach returns
    /// once its link is out of service, and the deletion follows in the
    /// background (within 1 s, measured by `weft-bench attach`; the bound
    /// here only keeps a broken reaper from hanging a test).
    pub fn retired_deleted(&self) {
        let t = std::time::Instant::now();
        loop {
            let left = self.retired_links();
            if left.is_empty() {
                return;
            }
            assert!(t.elapsed() < std::time::Duration::from_secs(10), "retired links not deleted after 10 s: {left:?}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The host namespace's nftables tables.
    pub fn nft_tables(&self) -> String {
        String::from_utf8_lossy(&self.ns.exec(&["nft", "list", "tables"]).stdout).into_owned()
    }

    /// Run the `weft` CLI against this host.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("weft")).env("WEFT_SOCKET", self.socket()).args(args).output().unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- weftd log ({}) ---\n{}", self.ns.name, self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The address part of "10.0.0.2/24".
pub fn addr_of(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_owned()
}

/// A TCP and UDP server in a namespace that answers "hello" to every
/// connection or datagram and records who connected, until dropped.
pub struct Server {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peers: std::sync::Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Listen on `addr` (TCP and UDP) inside `ns`; `[::]:PORT` serves both
    /// families.
    pub fn start(ns: &str, addr: &str) -> Server {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let addr: SocketAddr = addr.parse().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (s1, p1, t1) = (stop.clone(), peers.clone(), tx.clone());
        let tcp = on_ns(ns, move || {
            let l = TcpListener::bind(addr).unwrap();
            l.set_nonblocking(true).unwrap();
            t1.send(()).unwrap();
            while !s1.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut s, peer)) => {
                        p1.lock().unwrap().push(peer);
                        let _ = s.write_all(b"hello");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let (s2, p2) = (stop.clone(), peers.clone());
        let udp = on_ns(ns, move || {
            let u = std::net::UdpSocket::bind(addr).unwrap();
            u.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            while !s2.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = u.recv_from(&mut buf) {
                    p2.lock().unwrap().push(peer);
                    let _ = u.send_to(b"hello", peer);
                }
            }
        });
        rx.recv().unwrap();
        rx.recv().unwrap();
        Server { stop, peers, threads: vec![tcp, udp] }
    }

    /// The address of the most recent client.
    pub fn last_peer(&self) -> Option<std::net::IpAddr> {
        self.peers.lock().unwrap().last().map(|p| p.ip().to_canonical())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Source ports for probes, below the kernel's ephemeral range (32768+) so
/// they never meet a random one; wrapping after 22,000 probes is fine, the
/// flow that used a port that long ago has left conntrack.
static PROBE_PORT: AtomicUsize = AtomicUsize::new(0);

/// A UDP socket bound to a source port no earlier probe of this process
/// used (the next free one, should a port be taken in this namespace).
fn fresh_udp_socket(v4: bool) -> Option<std::net::UdpSocket> {
    for _ in 0..64 {
        let port = 10_000 + (PROBE_PORT.fetch_add(1, Ordering::Relaxed) % 22_000) as u16;
        let any = if v4 { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
        if let Ok(u) = std::net::UdpSocket::bind(SocketAddr::new(any, port)) {
            return Some(u);
        }
    }
    None
}

/// Send one UDP datagram from `ns` to `addr` and wait for the answer.
pub fn udp_query(ns: &str, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    on_ns(ns, move || {
        let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
        let u = std::net::UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        u.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..4 {
            u.send_to(b"ping", addr).map_err(|e| e.to_string())?;
            if let Ok((n, _)) = u.recv_from(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        Err("no answer".into())
    })
    .join()
    .unwrap()
}

/// Whether a TCP connection from `ns` to `addr` gets the server's greeting
/// within `wait` (a dropped SYN times out; a reset fails at once).
pub fn probe_tcp(ns: &str, addr: SocketAddr, wait: Duration) -> std::thread::JoinHandle<bool> {
    on_ns(ns, move || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, wait) else { return false };
        let _ = s.set_read_timeout(Some(wait));
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).is_ok() && &buf == b"hello"
    })
}

/// Whether a UDP datagram from `ns` to `addr` is answered within `wait`
/// (sent twice, half the time each). Every probe is a new flow: its source
/// port is one no earlier probe of this process used, because a random
/// ephemeral port can repeat an earlier probe's 5-tuple whose conntrack
/// entry is still alive — and an established flow is not re-checked
/// against policy, so a now-denied probe would pass as that old flow.
pub fn probe_udp(ns: &str, addr: SocketAddr, wait: Duration) -> std::thread::JoinHandle<bool> {
    on_ns(ns, move || {
        let Some(u) = fresh_udp_socket(addr.is_ipv4()) else { return false };
        let _ = u.set_read_timeout(Some(wait / 2));
        let mut buf = [0u8; 16];
        for _ in 0..2 {
            if u.send_to(b"ping", addr).is_err() {
                return false;
            }
            if let Ok((n, _)) = u.recv_from(&mut buf) {
                return &buf[..n] == b"hello";
            }
        }
        false
    })
}

/// A channel to the weftd at `socket` whose connection is made as `uid`/`gid`
/// (no supplementary groups): the connecting thread alone takes those
/// credentials, so SO_PEERCRED — and the socket file's permissions — see
/// that user, while the rest of the test keeps running as root.
pub async fn connect_as(socket: PathBuf, uid: u32, gid: u32) -> Result<Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_static("http://weftd.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let s = std::thread::spawn(move || {
                    become_on_this_thread(uid, gid)?;
                    std::os::unix::net::UnixStream::connect(&socket)
                })
                .join()
                .map_err(|_| std::io::Error::other("connecting thread panicked"))??;
                s.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::from_std(s)?))
            }
        }))
        .await
}

/// Take `uid`/`gid` with no supplementary groups on the calling thread only.
/// The raw syscalls are per thread; the libc wrappers would change every
/// thread of the test process.
#[allow(unsafe_code)]
fn become_on_this_thread(uid: u32, gid: u32) -> std::io::Result<()> {
    // -1 leaves the real and saved ids as they are.
    let calls: [(libc::c_long, [libc::c_long; 3]); 3] = [
        (libc::SYS_setgroups, [0, 0, 0]),
        (libc::SYS_setresgid, [-1, libc::c_long::from(gid), -1]),
        (libc::SYS_setresuid, [-1, libc::c_long::from(uid), -1]),
    ];
    for (nr, [a, b, c]) in calls {
        // SAFETY: plain syscalls with integer arguments (setgroups with size
        // 0 and a null list); they touch no memory of this process.
        if unsafe { libc::syscall(nr, a, b, c) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A channel to a TLS listener at `addr` inside namespace `ns` (the TCP
/// connection is opened from a thread in that namespace), with `tls`.
pub async fn connect_tls_in(
    ns: &str,
    addr: SocketAddr,
    tls: tonic::transport::ClientTlsConfig,
) -> Result<Channel, tonic::transport::Error> {
    let ns = ns.to_owned();
    tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_with_connector(tower::service_fn(move |_| {
            let ns = ns.clone();
            async move {
                let s = on_ns(&ns, move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
                    .join()
                    .map_err(|_| std::io::Error::other("connecting thread panicked"))??;
                s.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::TcpStream::from_std(s)?))
            }
        }))
        .await
}

/// A scratch directory of the test's (PEM files, configuration files),
/// removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> ScratchDir {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("weft-scratch-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
