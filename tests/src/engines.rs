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
    pub dir: ScratchDir,
    netns: String,
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
        Podman { netns: format!("/var/run/netns/{}", host.ns.name), dir }
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
