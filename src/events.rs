//! Change events: a bounded, in-process broadcast of "this resource changed"
//! notes that the services publish after a committed write and the
//! dashboard's stream (src/web.rs, docs/dashboard.md "Live updates") reads.
//!
//! An event carries ids only (kind, id, project): whoever receives one
//! refetches the resource through the normal API, so policy still decides
//! what it sees. The bus keeps the last [`CAPACITY`] events in a ring, each
//! with a sequence number, so a reader that reconnects resumes from the
//! number it saw last; a reader that fell further behind learns of the gap
//! ([`Gap`]) and refetches everything. Publishing never waits and never
//! grows memory: readers copy out of the ring, there is no queue per reader.
//!
//! A leaf module: it knows no HTTP and no service.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Events the ring keeps for readers that resume.
pub const CAPACITY: usize = 1024;

/// What kind of resource changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Server,
    Image,
    Volume,
    /// Something in the network service (networks, subnets, ports,
    /// routers, floating IPs, security groups): its writes are generic, so
    /// the event has no id and means "refetch the network lists".
    Network,
}

/// One change, as the stream sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Increases by one per event; unique across restarts (the first one of
    /// a run is the start time in microseconds).
    pub seq: u64,
    pub kind: Kind,
    /// The resource's id (empty for [`Kind::Network`]).
    pub id: String,
    /// The project that owns it (`None`: not tied to one project).
    pub project_id: Option<String>,
    /// When it was published, Unix seconds.
    pub at: i64,
}

/// A reader asked to resume from a number the ring no longer holds (or
/// one of another run): it must refetch everything and go on from `latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("events after {since} are no longer kept; the latest is {latest}")]
pub struct Gap {
    pub since: u64,
    pub latest: u64,
}

struct Ring {
    events: VecDeque<Event>,
    /// The sequence number of the last event published (the first event
    /// gets `latest + 1`).
    latest: u64,
}

struct Inner {
    ring: Mutex<Ring>,
    /// The latest sequence number, for readers to wait on.
    tick: tokio::sync::watch::Sender<u64>,
}

/// The bus: cheap to clone, one per server (server.rs makes it and hands
/// it to the services and the dashboard).
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("latest", &self.latest())
            .finish()
    }
}

impl Default for Bus {
    fn default() -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Bus::starting_at(start)
    }
}

impl Bus {
    /// A bus whose first event will be numbered `latest + 1`.
    pub fn starting_at(latest: u64) -> Bus {
        let (tick, _) = tokio::sync::watch::channel(latest);
        Bus {
            inner: Arc::new(Inner {
                ring: Mutex::new(Ring {
                    events: VecDeque::with_capacity(CAPACITY),
                    latest,
                }),
                tick,
            }),
        }
    }

    /// Tells readers that `id` of `kind` in `project_id` changed. Call it
    /// after the write committed.
    pub fn publish(&self, kind: Kind, id: &str, project_id: Option<&str>) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let seq = {
            let Ok(mut ring) = self.inner.ring.lock() else {
                return;
            };
            ring.latest += 1;
            let seq = ring.latest;
            if ring.events.len() == CAPACITY {
                ring.events.pop_front();
            }
            ring.events.push_back(Event {
                seq,
                kind,
                id: id.to_string(),
                project_id: project_id.map(str::to_string),
                at,
            });
            seq
        };
        self.inner.tick.send_replace(seq);
    }

    /// A server's state changed.
    pub fn server(&self, id: &str, project_id: &str) {
        self.publish(Kind::Server, id, Some(project_id));
    }

    /// The sequence number of the last event published.
    pub fn latest(&self) -> u64 {
        self.inner.ring.lock().map_or(0, |ring| ring.latest)
    }

    /// The events after `since`, at most `max` of them (oldest first), or
    /// the gap when some of them are no longer kept.
    pub fn since(&self, since: u64, max: usize) -> Result<Vec<Event>, Gap> {
        let Ok(ring) = self.inner.ring.lock() else {
            return Err(Gap { since, latest: 0 });
        };
        let gap = Gap {
            since,
            latest: ring.latest,
        };
        if since > ring.latest {
            // A number of another run (or made up).
            return Err(gap);
        }
        let oldest_kept = ring.events.front().map_or(ring.latest + 1, |e| e.seq);
        if since + 1 < oldest_kept {
            return Err(gap);
        }
        let skip = (since + 1 - oldest_kept) as usize;
        Ok(ring.events.iter().skip(skip).take(max).cloned().collect())
    }

    /// A receiver that wakes when something is published.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.tick.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_and_gap() {
        let bus = Bus::starting_at(100);
        assert_eq!(bus.since(100, 10), Ok(vec![]));
        bus.server("a", "p1");
        bus.publish(Kind::Image, "i", Some("p2"));
        let all = bus.since(100, 10).expect("kept");
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].seq, all[1].seq), (101, 102));
        assert_eq!(all[0].kind, Kind::Server);
        assert_eq!(bus.since(101, 10).expect("kept")[0].id, "i");
        assert_eq!(bus.since(100, 1).expect("kept").len(), 1);
        // Another run's number, ahead of this one.
        assert!(bus.since(500, 10).is_err());
        // Older than the bus: nothing was lost before 100.
        assert_eq!(
            bus.since(10, 10),
            Err(Gap {
                since: 10,
                latest: 102
            })
        );
    }

    #[test]
    fn the_ring_is_bounded() {
        let bus = Bus::starting_at(0);
        for i in 0..(CAPACITY + 10) {
            bus.server(&i.to_string(), "p");
        }
        assert_eq!(bus.latest(), (CAPACITY + 10) as u64);
        assert!(bus.since(5, 10).is_err());
        let tail = bus.since(10, CAPACITY * 2).expect("kept");
        assert_eq!(tail.len(), CAPACITY);
        assert_eq!(tail[0].seq, 11);
    }

    #[tokio::test]
    async fn readers_wake() {
        let bus = Bus::starting_at(0);
        let mut rx = bus.watch();
        let b = bus.clone();
        tokio::spawn(async move { b.server("x", "p") });
        rx.changed().await.expect("sender alive");
        assert_eq!(*rx.borrow(), 1);
    }
}
