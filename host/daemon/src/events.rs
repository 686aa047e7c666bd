//! The event log: events of recent commits, retained in memory (and, by
//! commit, in the store, so a resume works across restarts), published to
//! live watchers in revision order. A watch replays what it missed, then
//! follows live events with no gap and no duplicate: it subscribes before
//! reading the retained ones, and skips live events it already replayed.
//! A watcher that falls too far behind is ended with an error naming the
//! last revision it was sent — it re-lists or resumes from there; nothing
//! is ever dropped silently.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc};
use weft_model::ControlError;
use weft_model::api::EventStream;
use weft_model::event::{Event, EventKind, HEARTBEAT_SECS, RETAIN_EVENTS, RETAIN_SECS, WatchItem};

/// A hard bound on retained events, whatever their age.
const RETAIN_MAX: usize = 200_000;
/// How many live events a watcher may be behind before it is ended.
const LAG: usize = 16_384;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

struct Log {
    retained: VecDeque<Event>,
    revision: u64,
}

/// The log and the live feed.
pub struct Events {
    log: Mutex<Log>,
    live: broadcast::Sender<Event>,
    heartbeat: Duration,
    /// Events sent to watchers (metrics).
    streamed: Arc<AtomicU64>,
}

/// What one watcher asked for, resolved.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The tenant whose events to deliver.
    pub tenant: String,
    /// Deliver events after this revision (0: from now on).
    pub from: u64,
    /// Only this network's events (name), if set.
    pub network: Option<String>,
    /// Only these kinds, if set.
    pub kinds: Option<Vec<EventKind>>,
}

impl Subscription {
    fn wants(&self, e: &Event) -> bool {
        let tenant = if e.tenant.is_empty() { weft_model::ids::DEFAULT_TENANT } else { e.tenant.as_str() };
        tenant == self.tenant
            && self.network.as_ref().is_none_or(|n| n == &e.network)
            && self.kinds.as_ref().is_none_or(|k| k.contains(&e.kind))
    }
}

impl Events {
    /// A log holding `retained` (oldest first), at `revision`.
    pub fn new(retained: Vec<Event>, revision: u64) -> Events {
        Events::with_heartbeat(retained, revision, Duration::from_secs(HEARTBEAT_SECS))
    }

    /// The same with another heartbeat interval (tests).
    pub fn with_heartbeat(retained: Vec<Event>, revision: u64, heartbeat: Duration) -> Events {
        let (live, _) = broadcast::channel(LAG);
        Events {
            log: Mutex::new(Log { retained: retained.into(), revision }),
            live,
            heartbeat,
            streamed: Arc::new(AtomicU64::new(0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events sent to watchers since start.
    pub fn streamed(&self) -> u64 {
        self.streamed.load(Ordering::Relaxed)
    }

    /// The revision of the last published commit.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// The lowest revision that stays retained once a commit numbered
    /// `revision` adds `adding` events (None: nothing to drop). Events are
    /// dropped oldest first while more than [`RETAIN_EVENTS`] remain and
    /// the oldest is older than [`RETAIN_SECS`], or more than a hard bound
    /// remain; a revision is never split.
    pub fn trim_point(&self, adding: usize, revision: u64) -> Option<u64> {
        let log = self.lock();
        let total = log.retained.len() + adding;
        let young = now_ms().saturating_sub(RETAIN_SECS * 1000);
        let mut cut = 0;
        while let Some(e) = log.retained.get(cut) {
            let left = total - cut;
            if left > RETAIN_MAX || (left > RETAIN_EVENTS && e.time_ms < young) {
                cut += 1;
            } else {
                break;
            }
        }
        while cut > 0 && log.retained.get(cut).is_some_and(|e| e.revision == log.retained[cut - 1].revision) {
            cut -= 1;
        }
        match cut {
            0 => None,
            c => Some(log.retained.get(c).map_or(revision, |e| e.revision)),
        }
    }

    /// Publish a commit's events (already numbered `revision`), dropping
    /// retained events below `trim`.
    pub fn publish(&self, revision: u64, events: Vec<Event>, trim: Option<u64>) {
        let mut log = self.lock();
        log.revision = revision;
        if let Some(t) = trim {
            while log.retained.front().is_some_and(|e| e.revision < t) {
                log.retained.pop_front();
            }
        }
        for e in events {
            // Under the log lock, so live order is revision order; no
            // receiver is not an error.
            let _ = self.live.send(e.clone());
            log.retained.push_back(e);
        }
    }

    /// Start a watch: events after `sub.from` that `sub` wants, then live
    /// ones, with heartbeats on an idle stream.
    pub fn watch(&self, sub: Subscription) -> Result<EventStream, ControlError> {
        let mut rx = self.live.subscribe();
        let (replay, current) = {
            let log = self.lock();
            let current = log.revision;
            if sub.from > current {
                return Err(weft_model::InvalidRequest::new(
                    "from_revision",
                    format!("revision {} is ahead of the current revision {current}", sub.from),
                )
                .into());
            }
            if sub.from > 0 {
                let oldest = log.retained.front().map(|e| e.revision);
                let covered = match oldest {
                    Some(o) => sub.from + 1 >= o,
                    None => sub.from == current,
                };
                if !covered {
                    return Err(ControlError::OutOfRange(format!(
                        "revision {} is older than the oldest retained event (revision {}); list again and watch \
                         from the list's revision",
                        sub.from,
                        oldest.unwrap_or(current)
                    )));
                }
            }
            let replay: Vec<Event> = if sub.from == 0 {
                Vec::new()
            } else {
                log.retained.iter().filter(|e| e.revision > sub.from && sub.wants(e)).cloned().collect()
            };
            (replay, current)
        };
        let (tx, out) = mpsc::channel::<Result<WatchItem, ControlError>>(256);
        let heartbeat = self.heartbeat;
        let streamed = self.streamed.clone();
        let sent = move || streamed.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            // Live events at or below `floor` were replayed (or predate the
            // watch); the feed delivers each later one once, in order.
            let floor = current.max(sub.from);
            // The newest revision seen, and the newest known to be complete
            // (a later one has started): a lagging watcher is told the latter,
            // so resuming from it loses nothing.
            let (mut seen, mut complete) = (floor, floor);
            for e in replay {
                if tx.send(Ok(WatchItem::Event(e))).await.is_err() {
                    return;
                }
                sent();
            }
            let mut last_revision = current;
            let mut idle = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
            loop {
                tokio::select! {
                    got = rx.recv() => match got {
                        Ok(e) => {
                            last_revision = last_revision.max(e.revision);
                            if e.revision <= floor {
                                continue;
                            }
                            if e.revision > seen {
                                complete = seen;
                                seen = e.revision;
                            }
                            if !sub.wants(&e) {
                                continue;
                            }
                            if tx.send(Ok(WatchItem::Event(e))).await.is_err() {
                                return;
                            }
                            sent();
                            idle.reset();
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            let _ = tx
                                .send(Err(ControlError::Aborted(format!(
                                    "watch fell {n} events behind and was ended; every event up to revision \
                                     {complete} was sent: resume from it"
                                ))))
                                .await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = idle.tick() => {
                        if tx.send(Ok(WatchItem::Heartbeat(last_revision))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out)))
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
