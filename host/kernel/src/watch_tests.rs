use tokio::sync::mpsc::unbounded_channel;

use super::*;

fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend(((4 + v.len()) as u16).to_ne_bytes());
    a.extend(ty.to_ne_bytes());
    a.extend(v);
    while a.len() % 4 != 0 {
        a.push(0);
    }
    a
}

fn msg(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend(((16 + payload.len()) as u32).to_ne_bytes());
    m.extend(ty.to_ne_bytes());
    m.extend([0u8; 10]);
    m.extend(payload);
    while m.len() % 4 != 0 {
        m.push(0);
    }
    m
}

fn link(ty: u16, name: &str, up: bool, master: Option<u32>) -> Vec<u8> {
    let mut p = vec![0u8; 16];
    p[8..12].copy_from_slice(&(if up { IFF_UP } else { 0 }).to_ne_bytes());
    p.extend(attr(IFLA_IFNAME, format!("{name}\0").as_bytes()));
    if let Some(m) = master {
        p.extend(attr(IFLA_MASTER, &m.to_ne_bytes()));
    }
    msg(ty, &p)
}

fn nft(ty: u16, table: &str) -> Vec<u8> {
    let mut p = vec![libc::NFPROTO_INET as u8, 0, 0, 0];
    p.extend(attr(NFTA_ANY_TABLE, format!("{table}\0").as_bytes()));
    msg((NFNL_SUBSYS_NFTABLES << 8) | ty, &p)
}

fn newgen(pid: u32) -> Vec<u8> {
    let mut p = vec![0u8; 4];
    p.extend(attr(NFTA_GEN_PROC_PID, &pid.to_be_bytes()));
    msg((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN, &p)
}

#[test]
fn link_messages_say_what_changed() {
    let (tx, mut rx) = unbounded_channel();
    let mut buf = link(RTM_DELLINK, "br-x", false, None);
    buf.extend(link(RTM_NEWLINK, "vethabc", true, Some(7)));
    buf.extend(msg(RTM_DELADDR, &[2, 24, 0, 0, 9, 0, 0, 0]));
    assert!(parse_route(&buf, &tx));
    assert_eq!(rx.try_recv().unwrap(), KernelEvent::Link { name: "br-x".into(), gone: true, up: false, master: None });
    assert_eq!(
        rx.try_recv().unwrap(),
        KernelEvent::Link { name: "vethabc".into(), gone: false, up: true, master: Some(7) }
    );
    assert_eq!(rx.try_recv().unwrap(), KernelEvent::AddrGone { index: u32::from_ne_bytes([9, 0, 0, 0]) });
    assert!(rx.try_recv().is_err());
    assert!(parse_route(&[], &tx), "an overrun");
    assert_eq!(rx.try_recv().unwrap(), KernelEvent::Overflow);
}

#[test]
fn only_foreign_generations_touching_weft_are_reported() {
    let (tx, mut rx) = unbounded_channel();
    let mut touched = false;
    const NEWSETELEM: u16 = 12;
    // Another process (pid 1 is never one of this test's threads) changes weft's table.
    let mut buf = nft(NEWSETELEM, "weft");
    buf.extend(newgen(1));
    assert!(parse_nft(&buf, &mut touched, &tx));
    assert_eq!(rx.try_recv().unwrap(), KernelEvent::Nft);
    // The same change by this process: weft's own.
    let mut buf = nft(NEWSETELEM, "weft");
    buf.extend(newgen(std::process::id()));
    assert!(parse_nft(&buf, &mut touched, &tx));
    // By a recorded nft child.
    note_own_pid(4_000_000);
    let mut buf = nft(NEWSETELEM, "weft");
    buf.extend(newgen(4_000_000));
    assert!(parse_nft(&buf, &mut touched, &tx));
    // Another table.
    let mut buf = nft(NEWSETELEM, "other");
    buf.extend(newgen(1));
    assert!(parse_nft(&buf, &mut touched, &tx));
    assert!(rx.try_recv().is_err(), "nothing else reported");
}
