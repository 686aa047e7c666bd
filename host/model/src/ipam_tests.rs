use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn next_free_skips_runs() {
    let mut l = PoolLeases::default();
    assert_eq!(l.next_free(ip("10.0.0.2"), ip("10.0.0.5")), Some(ip("10.0.0.2")));
    l.reserve(ip("10.0.0.2"), "a");
    l.reserve(ip("10.0.0.3"), "b");
    l.reserve(ip("10.0.0.5"), "c");
    assert_eq!(l.next_free(ip("10.0.0.2"), ip("10.0.0.5")), Some(ip("10.0.0.4")));
    l.reserve(ip("10.0.0.4"), "d");
    assert_eq!(l.next_free(ip("10.0.0.2"), ip("10.0.0.5")), None);
    assert_eq!(l.last, Some(ip("10.0.0.4")));
    l.release(ip("10.0.0.4"), "not-the-holder");
    assert!(!l.is_free(ip("10.0.0.4")));
    l.release(ip("10.0.0.4"), "d");
    assert!(l.is_free(ip("10.0.0.4")));
    assert_eq!(l.next_free(ip("fd00::1"), ip("fd00::3")), Some(ip("fd00::1")));
    assert_eq!(l.next_free(ip("10.0.0.9"), ip("10.0.0.1")), None);
}

#[test]
fn answers_are_checked() {
    let pool = Pool { subnet: "10.0.0.0/24".parse().unwrap(), range: None, gateway: Some(ip("10.0.0.1")) };
    let req = IpamRequest { network: "n".into(), endpoint: "e".into(), static_address: None };
    let mut l = PoolLeases::default();
    assert!(check_answer(&pool, &req, &l, ip("10.0.0.2")).is_ok());
    assert!(check_answer(&pool, &req, &l, ip("10.0.0.1")).is_err());
    assert!(check_answer(&pool, &req, &l, ip("10.0.0.0")).is_err());
    assert!(check_answer(&pool, &req, &l, ip("10.0.0.255")).is_err());
    assert!(check_answer(&pool, &req, &l, ip("10.0.1.2")).is_err());
    l.reserve(ip("10.0.0.2"), "x");
    assert!(check_answer(&pool, &req, &l, ip("10.0.0.2")).is_err());
}
