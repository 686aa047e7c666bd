//! Real container engines driving weft through its CNI plugin: podman
//! (CNI backend, runc, cgroupfs) and containerd's CRI plugin, each with its
//! own configuration, storage, runtime state and socket under a scratch
//! directory — never the machine's defaults — and running in the test's
//! host namespace (entered with `nsenter --net=`, so the engine keeps the
//! machine's mount namespace and the namespaces it mounts are visible to
//! weftd). Images come from busybox-static: no registry is needed. Drop
//! removes every container, unmounts what the engine left under the
//! scratch directory and ends only the processes the test started.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::{Host, ScratchDir, bin_dir, sh};

/// Busybox applets the test images link.
const APPLETS: [&str; 12] =
    ["sh", "ping", "nc", "nslookup", "httpd", "wget", "ip", "sleep", "cat", "echo", "ls", "true"];

/// A directory with the plugin as `weft` and the reference `loopback`
/// (containerd's CRI adds it for every pod).
pub fn cni_bin_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("cni-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(bin_dir().join("weft-cni"), bin.join("weft")).unwrap();
    std::os::unix::fs::symlink("/usr/lib/cni/loopback", bin.join("loopback")).unwrap();
    bin
}

/// A root filesystem (`DIR/rootfs`) holding busybox-static, its applets
/// and `/www/index.html` ("hello from weft"); returns its tar.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "www", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(root.join("www/index.html"), "hello from weft\n").unwrap();
    let tar = dir.join("rootfs.tar");
    sh(&["tar", "-C", root.to_str().unwrap(), "-cf", tar.to_str().unwrap(), "."]);
    tar
}

/// runc with its state under `dir` (`runc --root`), as a script engines
/// take for their runtime binary.
pub fn runc_in(dir: &Path) -> PathBuf {
    let script = dir.join("runc");
    let body = format!("#!/bin/sh\nexec /usr/sbin/runc --root {} \"$@\"\n", dir.join("runc-state").display());
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

/// A cgroup parent unique to one engine of one test (`/weft-test-...`),
/// under which the engine puts its containers: removed, in every
/// hierarchy, on drop.
pub struct CgroupParent(pub String);

impl CgroupParent {
    /// A fresh name (nothing is created until an engine uses it).
    pub fn new(dir: &ScratchDir) -> CgroupParent {
        let tag = dir.0.file_name().unwrap().to_string_lossy().replace("weft-scratch-", "weft-test-");
        CgroupParent(format!("/{tag}"))
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let roots = std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten().map(|e| e.path());
        for root in roots.chain([PathBuf::from("/sys/fs/cgroup")]) {
            let top = root.join(self.0.trim_start_matches('/'));
            // Deepest first: a cgroup is removed with rmdir once it is empty.
            let mut dirs = Vec::new();
            let mut todo = vec![top];
            while let Some(d) = todo.pop() {
                if let Ok(rd) = std::fs::read_dir(&d) {
                    todo.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
                    dirs.push(d);
                }
            }
            for d in dirs.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// Unmount everything mounted at or below `dir` (deepest first).
pub fn unmount_below(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> =
        mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| p.starts_with(&prefix)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}

/// podman with its own containers.conf, storage, runc root and CNI
/// configuration directory, run in `host`'s namespace.
pub struct Podman {
    netns: String,
    /// Containers' cgroups go below it (`--cgroup-parent` of every run).
    pub cgroups: CgroupParent,
    pub dir: ScratchDir,
}

impl Podman {
    /// podman whose CNI configuration directory holds `conflist` (as
    /// `NAME.conflist`), with a busybox root filesystem to run.
    pub fn new(host: &Host, conflist: &Value) -> Podman {
        let dir = ScratchDir::new("podman");
        let d = &dir.0;
        let bin = cni_bin_dir(d);
        let conf_dir = d.join("cni");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let name = conflist["name"].as_str().unwrap();
        std::fs::write(conf_dir.join(format!("{name}.conflist")), conflist.to_string()).unwrap();
        // default_ulimits empty: podman's default asks for more open files
        // than these machines' hard limit allows.
        let conf = format!(
            "[containers]\ndefault_ulimits = []\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\nnetwork_config_dir = \"{}\"\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             events_logfile_path = \"{}\"\nstatic_dir = \"{}\"\nvolume_path = \"{}\"\n\
             [engine.runtimes]\nrunc = [\"{}\"]\n",
            bin.display(),
            conf_dir.display(),
            d.join("events.log").display(),
            d.join("static").display(),
            d.join("volumes").display(),
            runc_in(d).display(),
        );
        std::fs::write(d.join("containers.conf"), conf).unwrap();
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
            d.join("run").display(),
            d.join("root").display()
        );
        std::fs::write(d.join("storage.conf"), storage).unwrap();
        // No registries: the image is imported, nothing is pulled.
        std::fs::write(d.join("registries.conf"), "unqualified-search-registries = []\n").unwrap();
        busybox_rootfs(d);
        Podman { netns: format!("/var/run/netns/{}", host.ns.name), cgroups: CgroupParent::new(&dir), dir }
    }

    /// The busybox root filesystem, for `podman run --rootfs` (no image
    /// store, so nothing is copied through podman's blob cache).
    pub fn rootfs(&self) -> String {
        self.dir.0.join("rootfs").display().to_string()
    }

    /// Run podman with `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        let d = &self.dir.0;
        Command::new("nsenter")
            .arg(format!("--net={}", self.netns))
            .arg("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .output()
            .unwrap()
    }

    /// Run podman until it succeeds (a server just started may not listen
    /// yet), up to 5 s; its stdout.
    pub fn eventually(&self, args: &[&str]) -> String {
        for _ in 0..50 {
            let out = self.run(args);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).trim().to_owned();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.ok(args)
    }

    /// Run podman, panicking with its output if it fails; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        unmount_below(&self.dir.0);
    }
}

/// An OCI image archive of the busybox root filesystem whose command is
/// `cmd`, named `name` (for `ctr images import`).
pub fn oci_archive(dir: &Path, name: &str, cmd: &[&str]) -> PathBuf {
    use sha2::{Digest, Sha256};
    let layout = dir.join("oci");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let layer = std::fs::read(busybox_rootfs(dir)).unwrap();
    let (layer_digest, layer_size) = put(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name},
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let tar = dir.join("image.tar");
    sh(&["tar", "-C", layout.to_str().unwrap(), "-cf", tar.to_str().unwrap(), "."]);
    tar
}

/// The pause image's name in containerd.
pub const PAUSE_IMAGE: &str = "localhost/weft-pause:1";

/// containerd with its own configuration, root, state, socket, runc root
/// and CNI directories, running in `host`'s namespace; its CRI plugin
/// calls the weft plugin. Every `CNI_COMMAND` the plugin gets is logged
/// with its `CNI_NETNS` ([`Containerd::cni_calls`]).
pub struct Containerd {
    child: Option<std::process::Child>,
    /// The pods' cgroup parent (give it in `LinuxPodSandboxConfig`).
    pub cgroups: CgroupParent,
    /// /run/containerd did not exist before: containerd 1.6 puts its shims'
    /// sockets in /run/containerd/s whatever its state directory, so the
    /// (then empty) directories are removed after.
    made_run_dir: bool,
    pub dir: ScratchDir,
}

impl Containerd {
    /// Start containerd with `conflist` and the pause image imported.
    pub fn start(host: &Host, conflist: &Value) -> Containerd {
        let dir = ScratchDir::new("containerd");
        let d = dir.0.clone();
        let bin = cni_bin_dir(&d);
        // Log each call, then run the plugin.
        std::fs::remove_file(bin.join("weft")).unwrap();
        let log = d.join("cni-calls.log");
        let script = format!(
            "#!/bin/sh\necho \"$CNI_COMMAND netns=$CNI_NETNS\" >> {}\nexec {} \"$@\"\n",
            log.display(),
            bin_dir().join("weft-cni").display()
        );
        std::fs::write(bin.join("weft"), script).unwrap();
        std::fs::set_permissions(bin.join("weft"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let conf_dir = d.join("cni");
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::write(conf_dir.join("10-weft.conflist"), conflist.to_string()).unwrap();
        let p = |s: &str| d.join(s).display().to_string();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.overlayfs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  # These machines refuse a lower oom_score_adj than the caller's (the
  # sandbox's default is -998).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{runc}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
    max_conf_num = 1
"#,
            root = p("root"),
            state = p("state"),
            sock = p("containerd.sock"),
            opt = p("opt"),
            runc = p("runc-state"),
            bin = bin.display(),
            conf = conf_dir.display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let made_run_dir = !Path::new("/run/containerd").exists();
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", host.ns.name))
            .arg("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd { child: Some(child), cgroups: CgroupParent::new(&dir), made_run_dir, dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !c.socket().exists() {
            assert!(std::time::Instant::now() < deadline, "containerd did not start:\n{}", c.log());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let image = oci_archive(&d, PAUSE_IMAGE, &["/bin/sleep", "86400"]);
        c.ctr(&["images", "import", "--snapshotter", "native", image.to_str().unwrap()]);
        c
    }

    /// containerd's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.0.join("containerd.sock")
    }

    /// containerd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("containerd.log")).unwrap_or_default()
    }

    /// The plugin's invocations so far: (CNI_COMMAND, CNI_NETNS).
    pub fn cni_calls(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.dir.0.join("cni-calls.log")).unwrap_or_default();
        text.lines().filter_map(|l| l.split_once(" netns=")).map(|(c, n)| (c.to_owned(), n.to_owned())).collect()
    }

    /// Run `ctr` against this containerd (namespace k8s.io, the CRI's).
    pub fn ctr(&self, args: &[&str]) -> String {
        let sock = self.socket();
        let mut all = vec!["ctr", "--address", sock.to_str().unwrap(), "--namespace", "k8s.io"];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&sh(&all).stdout).into_owned()
    }

    /// A CRI runtime client.
    pub async fn cri(&self) -> k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel> {
        let ch = weft_grpc::client::connect_unix(self.socket()).await.unwrap();
        k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(ch)
    }

    /// Stop and remove every pod still there (what a failed test left).
    fn remove_pods(&self) {
        let sock = self.socket();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let Ok(ch) = weft_grpc::client::connect_unix(sock).await else { return };
                let mut c = k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(ch);
                let Ok(list) = c.list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest::default()).await else {
                    return;
                };
                for p in list.into_inner().items {
                    let id = p.id;
                    let _ = c.stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await;
                    let _ = c.remove_pod_sandbox(k8s_cri::v1::RemovePodSandboxRequest { pod_sandbox_id: id }).await;
                }
            });
        })
        .join();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_pods();
        if let Some(mut c) = self.child.take() {
            // nsenter execs containerd: this pid is containerd's.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::SIGTERM);
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- containerd log ---\n{}", self.log());
        }
        unmount_below(&self.dir.0);
        if self.made_run_dir {
            let _ = std::fs::remove_dir("/run/containerd/s");
            let _ = std::fs::remove_dir("/run/containerd");
        }
    }
}
