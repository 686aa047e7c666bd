//! The `weft` CLI against a real weftd: the commands of the core slice,
//! `-o json`, the WEFT_SOCKET variable, and errors printed with the daemon's
//! message and a non-zero exit.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use weft_tests::Host;

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "weft failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn network_and_endpoint_commands() {
    let host = Host::new("cli");
    let c1 = host.container("c1");
    ok(host.cli(&[
        "network",
        "create",
        "web",
        "--subnet",
        "10.88.0.0/24",
        "--subnet",
        "fd00:88::/64",
        "--gateway",
        "10.88.0.254",
        "--ip-range",
        "10.88.0.128/25",
        "--opt",
        "mtu=1400",
        "--label",
        "team=a",
    ]));
    let table = ok(host.cli(&["network", "ls"]));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("web") && table.contains("10.88.0.0/24,fd00:88::/64"), "{table}");

    let ep: Value = serde_json::from_str(&ok(host.cli(&[
        "endpoint",
        "attach",
        "web",
        "--netns",
        &c1.path(),
        "--name",
        "c1",
        "--label",
        "app=x",
        "--port-name",
        "http=80",
        "--port-name",
        "dns=53/udp",
        "-o",
        "json",
    ])))
    .unwrap();
    assert_eq!(ep["addresses"][0], "10.88.0.129/24", "allocated from the ip-range");
    assert_eq!(ep["port_names"], serde_json::json!(["http=80/tcp", "dns=53/udp"]));
    assert_eq!(ep["gateways"][0], "10.88.0.254");
    let mtu = String::from_utf8_lossy(&c1.exec(&["cat", "/sys/class/net/eth0/mtu"]).stdout).trim().to_owned();
    assert_eq!(mtu, "1400");

    let net: Value = serde_json::from_str(&ok(host.cli(&["network", "inspect", "web", "-o", "json"]))).unwrap();
    for key in ["name", "id", "tenant", "driver", "subnets", "gateways", "bridge", "options", "labels", "endpoints"] {
        assert!(!net[key].is_null(), "inspect lacks {key}: {net}");
    }
    assert_eq!(net["tenant"], "default");
    assert_eq!(net["driver"], "bridge");
    assert_eq!(net["options"]["mtu"], "1400");
    assert_eq!(net["labels"]["team"], "a");
    let e = &net["endpoints"][0];
    assert_eq!(e["name"], "c1");
    assert_eq!(e["netns"], c1.path());
    assert_eq!(e["ifname"], "eth0");
    assert_eq!(e["mac"], "02:42:0a:58:00:81");
    assert_eq!(e["addresses"].as_array().unwrap().len(), 2);

    let list: Value = serde_json::from_str(&ok(host.cli(&["endpoint", "ls", "-o", "json"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let detail = ok(host.cli(&["endpoint", "inspect", "web", "c1"]));
    assert!(detail.contains("02:42:0a:58:00:81") && detail.contains("Port name:  dns=53/udp"), "{detail}");

    // Errors: the daemon's message, non-zero exit, nothing changed.
    let out = host.cli(&["network", "create", "bad", "--subnet", "10.0.0.0/33"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("subnets[0].subnet: 10.0.0.0/33: prefix length must be <= 32"), "{err}");
    let out = host.cli(&["network", "rm", "web"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("detach them first"));
    let c2 = host.container("c2");
    for (bad, why) in [
        ("HTTP=80", "port_names[1]: \"HTTP=80\": port name \"HTTP\" may hold only lower-case letters"),
        ("http=8080", "port_names[1]: http=8080/tcp: the name \"http\" is already 80/tcp"),
    ] {
        let out = host.cli(&[
            "endpoint",
            "attach",
            "web",
            "--netns",
            &c2.path(),
            "--name",
            "c2",
            "--port-name",
            "http=80",
            "--port-name",
            bad,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{bad}: {err}");
    }
    let list: Value = serde_json::from_str(&ok(host.cli(&["endpoint", "ls", "-o", "json"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "a refused attach leaves nothing");

    ok(host.cli(&["endpoint", "detach", "web", "c1"]));
    ok(host.cli(&["network", "rm", "web"]));
    let list: Value = serde_json::from_str(&ok(host.cli(&["network", "ls", "-o", "json"]))).unwrap();
    assert_eq!(list, Value::Array(vec![]));
}

#[test]
fn unreachable_daemon_is_a_clear_error() {
    let out = std::process::Command::new(weft_tests::bin_dir().join("weft"))
        .env("WEFT_SOCKET", "/nonexistent/weft.sock")
        .args(["network", "ls"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach weftd at /nonexistent/weft.sock"));
}

#[test]
fn a_closed_pipe_is_quiet_and_completions_are_printed() {
    let host = Host::new("clipipe");
    // The reader is gone before weft writes: weft dies of SIGPIPE like any
    // Unix tool, with no panic on stderr.
    let weft = weft_tests::bin_dir().join("weft");
    let sock = host.socket();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("WEFT_SOCKET={} {} stats | true", sock.display(), weft.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    // Completions for bash load into bash.
    let script = ok(host.cli(&["completion", "bash"]));
    assert!(script.contains("_weft"), "{script}");
    let check = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source <({} completion bash) && complete -p weft", weft.display()))
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    assert!(String::from_utf8_lossy(&check.stdout).contains("weft"), "{check:?}");
}

#[test]
fn help_shows_every_command_with_an_example_that_parses() {
    let host = Host::new("clihelp");
    let help = ok(host.cli(&["--help"]));
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 9, "{help}");
    let examples: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Examples:"))
        .skip(1)
        .filter_map(|l| l.split('#').next().map(str::trim))
        .filter(|l| l.starts_with("weft ") || l.starts_with("source <(weft "))
        .collect();
    for c in &commands {
        let names = |e: &&str| {
            e.split_whitespace().collect::<Vec<_>>().windows(2).any(|w| w[0].ends_with("weft") && w[1] == *c)
        };
        assert!(examples.iter().any(names), "no example of {c}:\n{help}");
    }
    // Each example is a valid command line: against a weftd that is not
    // there it fails to connect (1), not with a usage error (2).
    let nobody = host.dir.join("nobody.sock");
    for e in &examples {
        let line = e.trim_start_matches("source <(").trim_end_matches(')');
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let out = std::process::Command::new(weft_tests::bin_dir().join("weft"))
            .env("WEFT_SOCKET", &nobody)
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(2), "{line}: {stderr}");
    }
}
