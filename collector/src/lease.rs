//! The compactor lease: at most one node at a time compacts, expires and
//! vacuums a table on an object store (delta-rs does not notice two
//! OPTIMIZE commits rewriting the same file, and two vacuums would race
//! each other's deletions).
//!
//! The lease is one object next to the table's log,
//! `_tracelake/compactor.lease` (a hidden directory, which vacuum leaves
//! alone), changed only by conditional writes: taken with put-if-absent,
//! renewed and taken over with put-if-match on the ETag last seen. Its body
//! names the holder, for people and metrics; nobody decides by its clock:
//!
//! - the holder counts the lease as its own until `ttl` after the start of
//!   its last successful write (it renews every `ttl / 3`);
//! - another node counts the lease as expired only once it has seen the
//!   same ETag for `ttl` on its own clock, from its first read of it. That
//!   read came after the holder's write began, so the holder's window has
//!   ended first, whatever the two machines' clocks say.
//!
//! A holder that stops renewing (killed, partitioned, stalled) loses the
//! lease `ttl` later at most; one that finds the ETag changed under it has
//! lost it and stops at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::{
    ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Where the lease object is, relative to the table root.
pub const LEASE_PATH: &str = "_tracelake/compactor.lease";

/// What the lease object holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseBody {
    /// The node holding it.
    pub holder: String,
    /// When the holder last renewed it (Unix ms, the holder's clock; for
    /// people, not for decisions).
    pub renewed_unix_ms: u64,
    pub ttl_ms: u64,
}

/// The state of the lease as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// This node holds it.
    Held,
    /// Another node holds it (its name, from the object).
    Other(String),
    /// Not known yet (not read, or the store did not answer).
    Unknown,
}

#[derive(Debug)]
struct Seen {
    version: UpdateVersion,
    /// When this node first saw `version`.
    since: Instant,
    holder: String,
}

#[derive(Debug)]
struct Inner {
    /// The last object version read or written.
    seen: Option<Seen>,
    /// Until when this node holds the lease.
    held_until: Option<Instant>,
}

/// One node's side of a table's compactor lease.
#[derive(Debug)]
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
    node: String,
    ttl: Duration,
    inner: Mutex<Inner>,
}

/// Error reaching the lease object.
#[derive(Debug, thiserror::Error)]
#[error("compactor lease {path}: {source}")]
pub struct Error {
    path: String,
    source: object_store::Error,
}

impl Lease {
    /// The lease of the table whose root `store` is, for node `node`.
    pub fn new(store: Arc<dyn ObjectStore>, node: impl Into<String>, ttl: Duration) -> Self {
        Self {
            store,
            path: object_store::path::Path::from(LEASE_PATH),
            node: node.into(),
            ttl,
            inner: Mutex::new(Inner {
                seen: None,
                held_until: None,
            }),
        }
    }

    /// Whether this node holds the lease now (and will for a moment: a
    /// commit started now finishes before another node may take it over,
    /// unless it stalls for most of the `ttl`).
    pub fn held(&self) -> bool {
        self.inner
            .lock()
            .held_until
            .is_some_and(|until| Instant::now() + self.ttl / 4 < until)
    }

    /// What this node knows of the lease.
    pub fn state(&self) -> LeaseState {
        let inner = self.inner.lock();
        if inner.held_until.is_some_and(|until| Instant::now() < until) {
            return LeaseState::Held;
        }
        match &inner.seen {
            Some(seen) if seen.holder != self.node => LeaseState::Other(seen.holder.clone()),
            _ => LeaseState::Unknown,
        }
    }

    /// How often [`Lease::tick`] should run.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Takes, renews or watches the lease (one read and at most one
    /// conditional write); returns whether this node holds it afterwards.
    pub async fn tick(&self) -> Result<bool, Error> {
        let err = |source| Error {
            path: self.path.to_string(),
            source,
        };
        let current = match self.store.get(&self.path).await {
            Ok(got) => {
                let version = UpdateVersion {
                    e_tag: got.meta.e_tag.clone(),
                    version: got.meta.version.clone(),
                };
                let bytes = got.bytes().await.map_err(err)?;
                let holder = serde_json::from_slice::<LeaseBody>(&bytes)
                    .map(|b| b.holder)
                    .unwrap_or_default();
                Some((version, holder))
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(source) => return Err(err(source)),
        };
        let now = Instant::now();
        let mode = {
            let mut inner = self.inner.lock();
            match current {
                None => PutMode::Create,
                Some((version, holder)) => {
                    let mine = inner.seen.as_ref().is_some_and(|s| s.version == version)
                        && inner.held_until.is_some_and(|until| now < until);
                    let unchanged_since = match &inner.seen {
                        Some(s) if s.version == version => s.since,
                        _ => now,
                    };
                    if !mine {
                        // Someone else wrote it last (or our window passed).
                        inner.held_until = None;
                    }
                    // An empty holder: given up at a shutdown.
                    let expired =
                        holder.is_empty() || now.duration_since(unchanged_since) >= self.ttl;
                    inner.seen = Some(Seen {
                        version: version.clone(),
                        since: unchanged_since,
                        holder,
                    });
                    if mine || expired {
                        PutMode::Update(version)
                    } else {
                        return Ok(false);
                    }
                }
            }
        };
        let body = LeaseBody {
            holder: self.node.clone(),
            renewed_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            ttl_ms: self.ttl.as_millis() as u64,
        };
        let payload = PutPayload::from(serde_json::to_vec(&body).expect("plain struct"));
        let started = Instant::now();
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self.store.put_opts(&self.path, payload, options).await {
            Ok(put) => {
                let mut inner = self.inner.lock();
                inner.seen = Some(Seen {
                    version: UpdateVersion {
                        e_tag: put.e_tag,
                        version: put.version,
                    },
                    since: started,
                    holder: self.node.clone(),
                });
                inner.held_until = Some(started + self.ttl);
                Ok(true)
            }
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                // Another node wrote first: read it at the next tick.
                let mut inner = self.inner.lock();
                inner.held_until = None;
                inner.seen = None;
                Ok(false)
            }
            Err(source) => {
                // Unknown whether the write landed: not ours until we know.
                self.inner.lock().held_until = None;
                Err(err(source))
            }
        }
    }

    /// Gives the lease up (at shutdown): another node may take it at its
    /// next tick instead of after the `ttl`.
    pub async fn release(&self) {
        let version = {
            let mut inner = self.inner.lock();
            if inner.held_until.take().is_none() {
                return;
            }
            inner.seen.take().map(|s| s.version)
        };
        if let Some(version) = version {
            // Deleting is not conditional on S3: write an expired body in
            // its place instead, which any node may take over.
            let body = LeaseBody {
                holder: String::new(),
                renewed_unix_ms: 0,
                ttl_ms: 0,
            };
            let options = PutOptions {
                mode: PutMode::Update(version),
                ..PutOptions::default()
            };
            let payload = PutPayload::from(serde_json::to_vec(&body).expect("plain struct"));
            if let Err(error) = self.store.put_opts(&self.path, payload, options).await {
                tracing::warn!(%error, "could not give the compactor lease up; it expires by itself");
            }
        }
    }

    /// Keeps ticking until `stop` turns true, then releases the lease;
    /// `gauge` is 1 while this node holds it.
    pub async fn run(
        self: Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        gauge: prometheus_client::metrics::gauge::Gauge,
    ) {
        let mut was_held = false;
        loop {
            match self.tick().await {
                Ok(held) => {
                    if held != was_held {
                        tracing::info!(node = %self.node, held, state = ?self.state(), "compactor lease");
                    }
                    was_held = held;
                }
                Err(error) => {
                    tracing::warn!(%error, "compactor lease not renewed");
                    was_held = false;
                }
            }
            gauge.set(i64::from(was_held));
            tokio::select! {
                _ = tokio::time::sleep(self.renew_every()) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        gauge.set(0);
        self.release().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(store: &Arc<dyn ObjectStore>, node: &str, ttl_ms: u64) -> Lease {
        Lease::new(Arc::clone(store), node, Duration::from_millis(ttl_ms))
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_a_silent_holder_is_replaced_after_the_ttl() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let a = lease(&store, "a", 600);
        let b = lease(&store, "b", 600);
        assert!(a.tick().await.unwrap());
        assert!(a.held());
        // b sees a's lease and waits, however often it looks.
        for _ in 0..5 {
            assert!(!b.tick().await.unwrap());
            assert_eq!(b.state(), LeaseState::Other("a".into()));
            // a renews: the object changes, so b's wait starts again.
            assert!(a.tick().await.unwrap());
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        assert!(!b.held());
        // a stops renewing (killed): its own window closes within the ttl...
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!a.held(), "a still counts a lease it stopped renewing");
        // ...but b first sees a's last renewal now, so it waits a whole ttl
        // from here, then takes it.
        assert!(!b.tick().await.unwrap());
        tokio::time::sleep(Duration::from_millis(650)).await;
        assert!(b.tick().await.unwrap());
        assert!(b.held());
        // a comes back: the object changed under it, so it has lost the
        // lease and does not take it back while b renews.
        assert!(!a.tick().await.unwrap());
        assert!(!a.held());
        assert_eq!(a.state(), LeaseState::Other("b".into()));
    }

    /// A store whose reads wait until two have been made: both nodes read
    /// the same state before either writes, the race a real store allows.
    #[derive(Debug)]
    struct ReadTogether {
        inner: object_store::memory::InMemory,
        barrier: tokio::sync::Barrier,
    }

    impl std::fmt::Display for ReadTogether {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "ReadTogether")
        }
    }

    type Location = object_store::path::Path;

    #[async_trait::async_trait]
    impl ObjectStore for ReadTogether {
        async fn put_opts(
            &self,
            location: &Location,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Location,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &Location,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            let got = self.inner.get_opts(location, options).await;
            self.barrier.wait().await;
            got
        }

        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<Location>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<Location>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&Location>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Location>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Location,
            to: &Location,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    #[tokio::test]
    async fn two_nodes_that_read_the_same_state_get_one_holder() {
        let store: Arc<dyn ObjectStore> = Arc::new(ReadTogether {
            inner: object_store::memory::InMemory::new(),
            barrier: tokio::sync::Barrier::new(2),
        });
        let a = lease(&store, "a", 300);
        let b = lease(&store, "b", 300);
        // A free lease: both read "absent", both try to create it.
        let (ha, hb) = tokio::join!(a.tick(), b.tick());
        assert!(
            ha.unwrap() ^ hb.unwrap(),
            "both or neither took a free lease"
        );
        let (holder, other) = if a.held() { (&a, &b) } else { (&b, &a) };
        // The holder stops renewing. Both then watch one version for a
        // whole ttl (the holder's own last write included), and both try to
        // take it over from that version at the same moment: one wins.
        let (h, o) = tokio::join!(holder.tick(), other.tick());
        assert!(h.unwrap() && !o.unwrap());
        let c = lease(&store, "c", 300);
        let (hc, ho) = tokio::join!(c.tick(), other.tick());
        assert!(!hc.unwrap() && !ho.unwrap(), "taken before the ttl");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!holder.held(), "the holder still counts an expired lease");
        let (hc, ho) = tokio::join!(c.tick(), other.tick());
        assert!(
            hc.unwrap() ^ ho.unwrap(),
            "both or neither took over the expired lease"
        );
        assert!(!(c.held() && other.held()));
    }

    #[tokio::test]
    async fn a_released_lease_is_taken_at_once() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let a = lease(&store, "a", 60_000);
        let b = lease(&store, "b", 60_000);
        assert!(a.tick().await.unwrap());
        assert!(!b.tick().await.unwrap());
        a.release().await;
        assert!(!a.held());
        assert!(
            b.tick().await.unwrap(),
            "a lease given up waits for its ttl"
        );
    }
}
