//! One refresh at a time, shared: the reads of a table each need its
//! latest version (every commit made before the read began), but a
//! refresh (a listing of the Delta log, or a read of the next commit's
//! entry, `SpansTable::load`) serves every read that arrived
//! before it started. Reads that come while one runs wait for it and
//! share the next.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use tokio::sync::{Mutex, MutexGuard};

/// A value (`T`, what a refresh publishes) and the state a refresh works
/// on (`S`, held by one refresh at a time).
pub(super) struct Latest<S, T> {
    state: Mutex<S>,
    /// The last refresh published: its number and value.
    published: parking_lot::Mutex<(u64, Option<T>)>,
    /// Refreshes started so far.
    started: AtomicU64,
}

/// What a caller of [`Latest::get`] got.
pub(super) enum Turn<'a, S, T> {
    /// The value of a refresh that started after the call did.
    Fresh(T),
    /// None has: the caller refreshes, then publishes.
    Refresh(Refresh<'a, S, T>),
}

/// The caller's turn to refresh; dropped without publishing (a failed
/// refresh), the next caller refreshes again.
pub(super) struct Refresh<'a, S, T> {
    state: MutexGuard<'a, S>,
    number: u64,
    latest: &'a Latest<S, T>,
}

impl<S, T: Clone> Latest<S, T> {
    pub(super) fn new(state: S) -> Self {
        Self {
            state: Mutex::new(state),
            published: parking_lot::Mutex::new((0, None)),
            started: AtomicU64::new(0),
        }
    }

    /// A value no older than this call: one a refresh that started after
    /// the call published, or the caller's turn to refresh.
    pub(super) async fn get(&self) -> Turn<'_, S, T> {
        let arrived = self.started.load(SeqCst);
        let state = self.state.lock().await;
        if let (number, Some(value)) = &*self.published.lock()
            && *number > arrived
        {
            return Turn::Fresh(value.clone());
        }
        Turn::Refresh(Refresh {
            state,
            number: self.started.fetch_add(1, SeqCst) + 1,
            latest: self,
        })
    }

    /// What the last refresh published, however old.
    pub(super) fn last(&self) -> Option<T> {
        self.published.lock().1.clone()
    }
}

impl<S, T: Clone> Refresh<'_, S, T> {
    /// The state to refresh.
    pub(super) fn state(&mut self) -> &mut S {
        &mut self.state
    }

    /// Publishes `value` to the callers that arrived before this refresh
    /// started and still wait (those that arrived since take the next).
    pub(super) fn publish(self, value: T) -> T {
        *self.latest.published.lock() = (self.number, Some(value.clone()));
        value
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// A store whose "log" is a counter of commits; a refresh reads it
    /// when it starts, then waits for `release` (a listing in flight).
    struct Store {
        commits: AtomicU64,
        refreshes: AtomicUsize,
        release: tokio::sync::Semaphore,
    }

    async fn read(latest: &Latest<(), u64>, store: &Store) -> u64 {
        match latest.get().await {
            Turn::Fresh(seen) => seen,
            Turn::Refresh(refresh) => {
                store.refreshes.fetch_add(1, SeqCst);
                let seen = store.commits.load(SeqCst);
                store.release.acquire().await.expect("open").forget();
                refresh.publish(seen)
            }
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn a_read_sees_every_commit_before_it_and_waiting_reads_share_one_refresh() {
        let latest = Arc::new(Latest::<(), u64>::new(()));
        let store = Arc::new(Store {
            commits: AtomicU64::new(1),
            refreshes: AtomicUsize::new(0),
            release: tokio::sync::Semaphore::new(0),
        });
        let spawn = |latest: &Arc<Latest<(), u64>>, store: &Arc<Store>| {
            let (latest, store) = (Arc::clone(latest), Arc::clone(store));
            tokio::spawn(async move { read(&latest, &store).await })
        };
        // A refresh in flight, having read the log before the commit.
        let first = spawn(&latest, &store);
        settle().await;
        assert_eq!(store.refreshes.load(SeqCst), 1);
        store.commits.store(2, SeqCst);
        // Reads arriving after the commit must not take the refresh in
        // flight: they wait, and share the one that starts after it.
        let after: Vec<_> = (0..5).map(|_| spawn(&latest, &store)).collect();
        settle().await;
        store.release.add_permits(1);
        assert_eq!(first.await.expect("first read"), 1);
        settle().await;
        assert_eq!(store.refreshes.load(SeqCst), 2, "one refresh for the five");
        store.release.add_permits(1);
        for read in after {
            // A read that refreshed on its own would wait for a release
            // that never comes.
            let seen = tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .expect("the five reads share one refresh")
                .expect("read");
            assert_eq!(seen, 2, "a read missed a commit");
        }
        assert_eq!(latest.last(), Some(2));
        // With nothing in flight, a read refreshes again.
        store.commits.store(3, SeqCst);
        store.release.add_permits(1);
        assert_eq!(read(&latest, &store).await, 3);
        assert_eq!(store.refreshes.load(SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refresh_dropped_in_flight_leaves_its_waiters_to_the_next() {
        let latest = Arc::new(Latest::<(), u64>::new(()));
        let store = Arc::new(Store {
            commits: AtomicU64::new(1),
            refreshes: AtomicUsize::new(0),
            release: tokio::sync::Semaphore::new(1),
        });
        assert_eq!(read(&latest, &store).await, 1);
        // A second refresh in flight, having read the log before a commit;
        // reads queue behind it; then it is dropped (its request went).
        let (l, s) = (Arc::clone(&latest), Arc::clone(&store));
        let dropped = tokio::spawn(async move { read(&l, &s).await });
        settle().await;
        store.commits.store(2, SeqCst);
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let (l, s) = (Arc::clone(&latest), Arc::clone(&store));
                tokio::spawn(async move { read(&l, &s).await })
            })
            .collect();
        settle().await;
        dropped.abort();
        assert!(dropped.await.expect_err("aborted").is_cancelled());
        assert_eq!(
            latest.last(),
            Some(1),
            "a dropped refresh publishes nothing"
        );
        settle().await;
        store.release.add_permits(1);
        for read in waiting {
            let seen = tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .expect("the three reads share one refresh")
                .expect("read");
            assert_eq!(seen, 2, "a read took what was published before it came");
        }
        assert_eq!(store.refreshes.load(SeqCst), 3);
    }
}
