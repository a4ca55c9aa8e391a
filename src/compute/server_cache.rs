//! Servers as last decoded, and their rendered list views, kept between
//! listings (`GET /servers/detail`, server_list.rs).
//!
//! Three things are kept. A listing's result per scope, reused while the
//! state file's write generation has not moved (nothing at all was written
//! since it was read). When a listing does read the stored documents, a
//! decoded server, reused when its document is byte for byte the one just
//! read. And each server's rendered view, reused only for the same inputs
//! (microversion, the caller's rights, the port facts read for this
//! request). So the responses are exactly those rendered afresh. Decoded
//! servers and views are held within [`BUDGET`] bytes, past which they start
//! over; kept listings name at most [`LISTED_SERVERS`] servers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::networking::PortFacts;
use crate::db::DbResult;
use crate::db::servers::{Server, decode_server};

/// What the cache may hold (documents, decoded servers estimated at twice
/// their document, rendered views): about 1,000 servers' worth at 1 KiB
/// documents and two kinds of view each.
pub const BUDGET: usize = 8 << 20;

/// Everything a server's view depends on besides the server and its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewKey {
    /// The request's microversion (minor number).
    pub microversion: u16,
    /// The caller's rights on the server's project (admin, extended
    /// attributes, host status).
    pub rights: [bool; 3],
    /// Show or detail view (not the short update view).
    pub full: bool,
    /// A listing's entry (leaves out what only show carries).
    pub in_list: bool,
}

/// One server's kept state.
struct Entry {
    /// The document `server` was decoded from.
    doc: Box<str>,
    server: Arc<Server>,
    /// Rendered views of `server`, by key and the port facts they showed.
    views: Vec<(ViewKey, Option<PortFacts>, Arc<[u8]>)>,
}

#[derive(Default)]
struct Entries {
    by_id: HashMap<String, Entry>,
    /// What `by_id` holds, as [`BUDGET`] counts it.
    bytes: usize,
    /// The last listing of each scope, with the state file's write generation
    /// it was read at ([`crate::db::Db::write_generation`]).
    listings: HashMap<ListingScope, (u64, Vec<Arc<Server>>)>,
}

/// What a listing read: one project's servers (or every project's), with
/// the deleted ones or not.
type ListingScope = (Option<String>, bool);

/// How many scopes' listings are kept (then they start over).
const LISTINGS: usize = 64;

/// How many servers the kept listings may name in all (a listing's servers
/// stay in memory while it is kept, whatever [`BUDGET`] says): a longer
/// listing (every project's, or with years of deleted servers) is read
/// again each time.
const LISTED_SERVERS: usize = 4096;

/// The kept servers and views (one per compute state). Concurrent listings
/// share the lock while they find what they need; only a change writes.
#[derive(Default)]
pub struct ServerCache {
    entries: RwLock<Entries>,
}

impl ServerCache {
    // A panic while holding the lock leaves whole entries behind (each
    // change is one insert or push), so the contents stay usable.
    fn read(&self) -> RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The server stored as `doc` under `id`: the kept one when `doc` is
    /// the document it was decoded from, else decoded now (and kept).
    pub fn server(&self, id: &str, doc: &str) -> DbResult<Arc<Server>> {
        if let Some(entry) = self.read().by_id.get(id)
            && *entry.doc == *doc
        {
            return Ok(entry.server.clone());
        }
        let server = Arc::new(decode_server(doc)?);
        let mut entries = self.write();
        let size = doc.len() * 3;
        entries.make_room(size);
        if let Some(old) = entries.by_id.insert(
            id.to_string(),
            Entry {
                doc: doc.into(),
                server: server.clone(),
                views: Vec::new(),
            },
        ) {
            entries.bytes = entries.bytes.saturating_sub(old.size());
        }
        entries.bytes += size;
        Ok(server)
    }

    /// The view of `server` for `key` and `ports`: kept from an earlier
    /// request, or rendered now by `render` (and kept while `server` is
    /// still the kept version of its document).
    pub fn view<E>(
        &self,
        server: &Arc<Server>,
        key: ViewKey,
        ports: Option<&PortFacts>,
        render: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Arc<[u8]>, E> {
        if let Some(entry) = self.read().by_id.get(&server.id)
            && Arc::ptr_eq(&entry.server, server)
            && let Some((_, _, text)) = entry
                .views
                .iter()
                .find(|(k, p, _)| *k == key && p.as_ref() == ports)
        {
            return Ok(text.clone());
        }
        let text: Arc<[u8]> = render()?.into();
        let mut entries = self.write();
        let size = text.len();
        if entries.bytes + size <= BUDGET
            && let Some(entry) = entries.by_id.get_mut(&server.id)
            && Arc::ptr_eq(&entry.server, server)
            // A concurrent listing may have kept the same view meanwhile.
            && !entry.views.iter().any(|(k, p, _)| *k == key && p.as_ref() == ports)
        {
            entry.views.push((key, ports.cloned(), text.clone()));
            entries.bytes += size;
        }
        Ok(text)
    }

    /// The servers a listing of `scope` read at `generation`, when nothing
    /// has been written to the state file since.
    pub fn listing(
        &self,
        project: Option<&str>,
        with_deleted: bool,
        generation: u64,
    ) -> Option<Vec<Arc<Server>>> {
        let entries = self.read();
        let (at, servers) = entries
            .listings
            .get(&(project.map(str::to_string), with_deleted))?;
        (*at == generation).then(|| servers.clone())
    }

    /// Keeps what a listing read; `generation` is the write generation read
    /// *before* the state file was.
    pub fn keep_listing(
        &self,
        project: Option<&str>,
        with_deleted: bool,
        generation: u64,
        servers: &[Arc<Server>],
    ) {
        let mut entries = self.write();
        let scope = (project.map(str::to_string), with_deleted);
        if entries
            .listings
            .get(&scope)
            .is_some_and(|(at, _)| *at > generation)
        {
            return;
        }
        entries.listings.remove(&scope);
        if servers.len() > LISTED_SERVERS {
            return;
        }
        let listed: usize = entries.listings.values().map(|(_, l)| l.len()).sum();
        if entries.listings.len() >= LISTINGS || listed + servers.len() > LISTED_SERVERS {
            entries.listings.clear();
        }
        entries
            .listings
            .insert(scope, (generation, servers.to_vec()));
    }
}

impl Entries {
    /// Starts over when `size` more bytes would pass the budget.
    fn make_room(&mut self, size: usize) {
        if self.bytes + size > BUDGET {
            self.by_id.clear();
            self.bytes = 0;
        }
    }
}

impl Entry {
    fn size(&self) -> usize {
        self.doc.len() * 3 + self.views.iter().map(|(_, _, t)| t.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_of(id: &str, name: &str) -> String {
        let server = Server {
            id: id.into(),
            name: name.into(),
            ..Default::default()
        };
        serde_json::to_string(&server).expect("a server encodes")
    }

    fn doc(name: &str) -> String {
        doc_of("s1", name)
    }

    const KEY: ViewKey = ViewKey {
        microversion: 1,
        rights: [false; 3],
        full: true,
        in_list: true,
    };

    #[test]
    fn a_changed_document_is_decoded_and_rendered_again() {
        let cache = ServerCache::default();
        let first = cache.server("s1", &doc("a")).expect("decodes");
        assert!(Arc::ptr_eq(
            &first,
            &cache.server("s1", &doc("a")).expect("decodes")
        ));
        let renders = std::cell::Cell::new(0);
        let render = |server: &Arc<Server>| {
            cache
                .view::<()>(server, KEY, None, || {
                    renders.set(renders.get() + 1);
                    Ok(server.name.clone().into_bytes())
                })
                .expect("renders")
        };
        assert_eq!(&*render(&first), b"a");
        assert_eq!(&*render(&first), b"a");
        assert_eq!(renders.get(), 1);
        let second = cache.server("s1", &doc("b")).expect("decodes");
        assert_eq!(second.name, "b");
        assert_eq!(&*render(&second), b"b");
        assert_eq!(renders.get(), 2);
        // A server decoded before the change is rendered, never kept.
        assert_eq!(&*render(&first), b"a");
        assert_eq!(renders.get(), 3);
        assert_eq!(&*render(&second), b"b");
        assert_eq!(renders.get(), 3);
    }

    #[test]
    fn views_differ_by_key_and_ports() {
        let cache = ServerCache::default();
        let server = cache.server("s1", &doc("a")).expect("decodes");
        let ports = PortFacts {
            security_groups: vec!["default".into()],
            ..Default::default()
        };
        let other_key = ViewKey {
            microversion: 75,
            ..KEY
        };
        let mut renders = 0;
        for (key, ports) in [
            (KEY, None),
            (other_key, None),
            (KEY, Some(&ports)),
            (KEY, None),
            (other_key, None),
            (KEY, Some(&ports)),
        ] {
            cache
                .view::<()>(&server, key, ports, || {
                    renders += 1;
                    Ok(Vec::new())
                })
                .expect("renders");
        }
        assert_eq!(renders, 3);
    }

    #[test]
    fn a_listing_is_kept_for_its_scope_and_generation_only() {
        let cache = ServerCache::default();
        let server = cache.server("s1", &doc("a")).expect("decodes");
        cache.keep_listing(Some("p"), false, 7, std::slice::from_ref(&server));
        assert_eq!(cache.listing(Some("p"), false, 7).map(|l| l.len()), Some(1));
        assert!(cache.listing(Some("p"), false, 8).is_none());
        assert!(cache.listing(Some("p"), true, 7).is_none());
        assert!(cache.listing(None, false, 7).is_none());
        assert!(cache.listing(Some("q"), false, 7).is_none());
        // An older read never replaces a newer one.
        cache.keep_listing(Some("p"), false, 9, &[]);
        cache.keep_listing(Some("p"), false, 8, std::slice::from_ref(&server));
        assert_eq!(cache.listing(Some("p"), false, 9).map(|l| l.len()), Some(0));
        // A listing too long to keep is not kept, nor is the scope's older one.
        let long = vec![server.clone(); LISTED_SERVERS + 1];
        cache.keep_listing(Some("p"), false, 10, &long);
        assert!(cache.listing(Some("p"), false, 9).is_none());
        assert!(cache.listing(Some("p"), false, 10).is_none());
        // Together the kept listings name at most LISTED_SERVERS servers.
        let half = vec![server; LISTED_SERVERS / 2 + 1];
        cache.keep_listing(Some("a"), false, 10, &half);
        cache.keep_listing(Some("b"), false, 10, &half);
        assert!(cache.listing(Some("a"), false, 10).is_none());
        assert!(cache.listing(Some("b"), false, 10).is_some());
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let cache = ServerCache::default();
        let big = "x".repeat(BUDGET / 8);
        for i in 0..40 {
            let id = format!("s{i}");
            let server = cache.server(&id, &doc_of(&id, &big)).expect("decodes");
            cache
                .view::<()>(&server, KEY, None, || Ok(big.clone().into_bytes()))
                .expect("renders");
            assert!(cache.read().bytes <= BUDGET);
        }
    }
}
