//! Simulated hosts for cluster mode: an underlay bridge in its own
//! namespace, N host namespaces each joined to it by a veth (`wtul`, with
//! 10.200.0.<i+1>/24), a three-member etcd cluster on the first three
//! hosts' underlay addresses (data under /dev/shm, started and stopped by
//! PID), and a weftd per host with `--etcd --node --advertise-ip`. All of
//! it is this test's own and goes on drop, also when the test fails.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Host, Netns, sh};

/// One etcd member, run inside a host namespace.
pub struct EtcdMember {
    pub name: String,
    pub ns: String,
    pub ip: String,
    pub dir: PathBuf,
    cluster: String,
    token: String,
    child: Option<Child>,
}

impl EtcdMember {
    /// Start (or restart, on its existing data) the member.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "etcd {} already running", self.name);
        let log = File::options().create(true).append(true).open(self.dir.with_extension("log")).unwrap();
        let peer = format!("http://{}:2380", self.ip);
        let client = format!("http://{}:2379", self.ip);
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "etcd"])
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.cluster, "--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Kill the member with SIGKILL (by its PID).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The member's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.dir.with_extension("log"));
    }
}

/// Hosts on one underlay, sharing etcd.
pub struct Cluster {
    /// The weftds, host i at 10.200.0.<i+1>. Dropped before the rest.
    pub hosts: Vec<Host>,
    pub etcd: Vec<EtcdMember>,
    pub underlay: Netns,
    /// When the weftds were started (all at once).
    pub started: Instant,
    /// When the last of them was serving.
    pub ready: Instant,
}

/// Host i's underlay address.
pub fn underlay_ip(i: usize) -> String {
    format!("10.200.0.{}", i + 1)
}

impl Cluster {
    /// `n` hosts (at least 3: etcd runs on the first three), weftd started
    /// on each with `args` too; waits until every node is registered.
    pub fn new(tag: &str, n: usize, args: &[&str]) -> Cluster {
        assert!(n >= 3);
        let underlay = Netns::new(tag, "underlay");
        sh(&["ip", "-n", &underlay.name, "link", "add", "ulbr", "type", "bridge"]);
        sh(&["ip", "-n", &underlay.name, "link", "set", "ulbr", "up"]);
        let mut hosts: Vec<Host> = (0..n).map(|i| Host::unstarted(&format!("{tag}{i}"), args)).collect();
        for (i, h) in hosts.iter().enumerate() {
            let port = format!("ul{i}");
            sh(&[
                "ip",
                "-n",
                &underlay.name,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "wtul",
                "netns",
                &h.ns.name,
            ]);
            sh(&["ip", "-n", &underlay.name, "link", "set", &port, "master", "ulbr", "up"]);
            sh(&["ip", "-n", &h.ns.name, "addr", "add", &format!("{}/24", underlay_ip(i)), "dev", "wtul"]);
            sh(&["ip", "-n", &h.ns.name, "link", "set", "wtul", "up"]);
        }
        let token = format!("weft-{}", underlay.name);
        let initial: Vec<String> = (0..3).map(|i| format!("m{i}=http://{}:2380", underlay_ip(i))).collect();
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() { shm } else { std::env::temp_dir() };
        let mut etcd: Vec<EtcdMember> = (0..3)
            .map(|i| EtcdMember {
                name: format!("m{i}"),
                ns: hosts[i].ns.name.clone(),
                ip: underlay_ip(i),
                dir: base.join(format!("weft-etcd-{}-m{i}", underlay.name)),
                cluster: initial.join(","),
                token: token.clone(),
                child: None,
            })
            .collect();
        for m in &mut etcd {
            let _ = std::fs::remove_dir_all(&m.dir);
            m.start();
        }
        let endpoints: Vec<String> = (0..3).map(|i| format!("http://{}:2379", underlay_ip(i))).collect();
        for (i, h) in hosts.iter_mut().enumerate() {
            h.add_args(&[
                "--etcd".into(),
                endpoints.join(","),
                "--node".into(),
                format!("n{i}"),
                "--advertise-ip".into(),
                underlay_ip(i),
                "--node-ttl-secs".into(),
                "3".into(),
            ]);
        }
        let started = Instant::now();
        for h in hosts.iter_mut() {
            h.spawn();
        }
        // Every node joins at once.
        for h in &mut hosts {
            h.wait_ready();
        }
        let ready = Instant::now();
        let c = Cluster { hosts, etcd, underlay, started, ready };
        c.wait_nodes(0, n, Duration::from_secs(30));
        c
    }

    /// Wait until host `i` sees `alive` nodes alive.
    pub fn wait_nodes(&self, i: usize, alive: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.alive_nodes(i);
            if seen.len() == alive {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "host {i} sees nodes {seen:?}, want {alive} alive\n{}\n{}",
                self.hosts[i].log(),
                self.etcd[0].log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The nodes host `i` reports alive (`weft node ls -o json`).
    pub fn alive_nodes(&self, i: usize) -> Vec<String> {
        let out = self.hosts[i].cli(&["node", "ls", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|n| n["alive"].as_bool() == Some(true))
                    .filter_map(|n| n["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Wait until `f` holds, or fail naming `what`.
    pub fn wait_for(&self, what: &str, within: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !f() {
            assert!(Instant::now() < deadline, "{what}: not within {within:?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every weftd's log, for a failure message.
    pub fn logs(&self) -> String {
        self.hosts.iter().map(|h| format!("--- {} ---\n{}", h.ns.name, h.log())).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // weftds first (they hold etcd connections), then etcd, then the
        // namespaces (fields drop in order after this).
        for h in &mut self.hosts {
            h.stop();
        }
        for m in &mut self.etcd {
            m.kill();
        }
    }
}
