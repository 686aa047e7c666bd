use futures::StreamExt;
use weft_model::event::{Event, EventKind, WatchItem};

use super::*;

fn ev(rev: u64, tenant: &str, network: &str) -> Event {
    let mut e = Event::new(EventKind::EndpointAttached, tenant, network, "e");
    e.revision = rev;
    e.time_ms = now_ms();
    e
}

fn sub(tenant: &str, from: u64) -> Subscription {
    Subscription { tenant: tenant.into(), from, network: None, kinds: None }
}

async fn next(s: &mut EventStream) -> WatchItem {
    tokio::time::timeout(Duration::from_secs(5), s.next()).await.expect("an item in time").expect("open").expect("ok")
}

#[tokio::test]
async fn resume_replays_then_follows_live_with_no_gap_or_duplicate() {
    let log = Events::new(vec![ev(1, "a", "n"), ev(2, "b", "n"), ev(3, "a", "n")], 3);
    let mut s = log.watch(sub("a", 1)).unwrap();
    assert!(matches!(next(&mut s).await, WatchItem::Event(e) if e.revision == 3));
    log.publish(4, vec![ev(4, "a", "n")], None);
    log.publish(5, vec![ev(5, "b", "n")], None);
    log.publish(6, vec![ev(6, "a", "m")], None);
    let got: Vec<u64> = [next(&mut s).await, next(&mut s).await]
        .into_iter()
        .map(|i| match i {
            WatchItem::Event(e) => e.revision,
            WatchItem::Heartbeat(r) => panic!("heartbeat {r} before events"),
        })
        .collect();
    assert_eq!(got, vec![4, 6], "tenant b's event is not delivered to a");
}

#[tokio::test]
async fn too_old_is_out_of_range_and_ahead_is_invalid() {
    let log = Events::new(vec![ev(5, "a", "n"), ev(6, "a", "n")], 6);
    assert!(log.watch(sub("a", 4)).is_ok(), "revision 4 is just before the oldest retained (5)");
    match log.watch(sub("a", 2)) {
        Err(ControlError::OutOfRange(m)) => assert!(m.contains("oldest retained event (revision 5)"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("revision 2 is not retained"),
    }
    assert!(matches!(log.watch(sub("a", 9)), Err(ControlError::Invalid(_))));
}

#[tokio::test]
async fn idle_streams_get_heartbeats_with_the_current_revision() {
    let log = Events::with_heartbeat(vec![], 7, Duration::from_millis(50));
    let mut s = log.watch(sub("a", 0)).unwrap();
    assert_eq!(next(&mut s).await, WatchItem::Heartbeat(7));
}

#[test]
fn trimming_keeps_young_events_and_whole_revisions() {
    let now = now_ms();
    let old = now - (RETAIN_SECS + 10) * 1000;
    let mut retained: Vec<Event> = (1..=RETAIN_EVENTS as u64 + 10)
        .map(|r| {
            let mut e = ev(r, "a", "n");
            e.time_ms = old;
            e
        })
        .collect();
    // Revision 11 has two events: the cut may not split it.
    let mut twin = retained[10].clone();
    twin.name = "twin".into();
    retained.insert(11, twin);
    let log = Events::new(retained, RETAIN_EVENTS as u64 + 10);
    let cut = log.trim_point(1, RETAIN_EVENTS as u64 + 11).unwrap();
    assert!(cut <= 12, "{cut}");
    let young = Events::new(vec![ev(1, "a", "n"); RETAIN_EVENTS + 5], 1);
    assert_eq!(young.trim_point(1, 2), None, "events younger than the retention time stay");
}

#[tokio::test]
async fn a_watcher_too_slow_to_keep_up_is_ended_naming_where_to_resume() {
    let log = Events::new(vec![], 0);
    let mut s = log.watch(sub("a", 0)).unwrap();
    // Two events per revision, far more than the watcher may fall behind.
    let total = (LAG as u64) * 2;
    for rev in 1..=total / 2 {
        log.publish(rev, vec![ev(rev, "a", "n"), ev(rev, "a", "n")], None);
    }
    let mut got = 0u64;
    let mut last = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.next()).await.expect("in time").expect("open") {
            Ok(WatchItem::Event(e)) => {
                assert!(e.revision >= last, "in order");
                last = e.revision;
                got += 1;
            }
            Ok(WatchItem::Heartbeat(_)) => {}
            Err(ControlError::Aborted(m)) => {
                let resume: u64 =
                    m.split("up to revision ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
                assert!(resume < last || (resume == last && got.is_multiple_of(2)), "{m} after revision {last}");
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(got < total, "it was ended before the end");
}
