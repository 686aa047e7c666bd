use super::*;

fn req() -> AttachEndpoint {
    AttachEndpoint { network: "n1".into(), name: "web".into(), netns: "/var/run/netns/x".into(), ..Default::default() }
}

#[test]
fn defaults_and_rules() {
    let s = req().validate().unwrap();
    assert_eq!(s.ifname.as_str(), "eth0");
    assert_eq!(s.tenant.as_str(), "default");
    let mut r = req();
    r.netns = "relative/x".into();
    assert_eq!(r.validate().unwrap_err().field, "netns");
    let mut r = req();
    r.ips = vec!["10.0.0.5".into(), "10.0.0.6".into()];
    assert_eq!(r.validate().unwrap_err().field, "ips[1]");
    let mut r = req();
    r.ips = vec!["10.0.0.5".into(), "fd00::5".into()];
    assert_eq!(r.validate().unwrap().ips.len(), 2);
    let mut r = req();
    r.mac = "zz".into();
    assert_eq!(r.validate().unwrap_err().field, "mac");
    let mut r = req();
    r.ifname = "lo".into();
    assert!(r.validate().is_err());
}

#[test]
fn derived_names_fit() {
    let id = "0123456789abcdef0123456789abcdef";
    assert_eq!(Endpoint::host_ifname_for(id).unwrap().as_str(), "veth0123456789a");
    assert_eq!(Endpoint::peer_tmp_ifname_for(id).unwrap().as_str(), "vtmp0123456789a");
}

#[test]
fn counts_are_capped_and_kernel_names_refused() {
    let mut r = req();
    r.publish = (0..=MAX_PUBLISH).map(|i| format!("{}:80", 10000 + i)).collect();
    let e = r.validate().unwrap_err();
    assert_eq!((e.field.as_str(), e.reason.as_str()), ("publish", "257 entries; at most 256 per endpoint"));
    let mut r = req();
    r.aliases = (0..=MAX_ALIASES).map(|i| format!("a{i}")).collect();
    assert_eq!(r.validate().unwrap_err().field, "aliases");
    let mut r = req();
    r.labels = (0..=crate::network::MAX_LABELS).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let e = r.validate().unwrap_err();
    assert_eq!((e.field.as_str(), e.reason.as_str()), ("labels", "65 labels; at most 64"));
    for name in ["all", "default"] {
        let mut r = req();
        r.ifname = name.into();
        let e = r.validate().unwrap_err();
        assert!(e.reason.contains("reserved by the kernel"), "{name}: {e}");
    }
}
