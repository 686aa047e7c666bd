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
