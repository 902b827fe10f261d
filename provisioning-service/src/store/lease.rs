//! Connections a request handed back clean (a device step's, a hub check's), passed to the
//! next request.
//!
//! sqlx confirms every connection that goes back to its pool with a round trip (a Sync, in
//! `PoolConnection::return_to_pool`): that flushes a dropped transaction's queued ROLLBACK and
//! drains a cancelled query's answers. A device step's statements are complete and outside any
//! transaction when the step says it is [done](Lease::done) with its connection, so there is
//! nothing to flush: the connection goes to the next request instead, and a registration costs
//! Postgres its statements and nothing else.
//!
//! - While requests wait for a connection, a clean one goes straight to the longest-waiting of
//!   them (kept, it would starve them; sent back to the pool, it would cost the round trip).
//!   That request abandons its wait on the pool, which keeps all its connections open so that
//!   the wait abandons no connect ([`super::pool_options`]).
//! - Otherwise it waits here for the next request, at most [`KEPT_FOR`]; then it goes back to
//!   the pool the usual way, where requests that use the pool directly find it.
//! - A connection out of the pool for [`OUT_AT_MOST`] goes back the usual way when next done
//!   with, so that sqlx's lifetime policy still replaces it under constant load.
//! - A lease dropped any other way (an error, a cancelled request) goes back the usual way at
//!   once.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use sqlx::pool::PoolConnection;
use sqlx::{Connection as _, PgConnection, PgPool, Postgres};
use tokio::sync::oneshot;

/// How long a clean connection waits for the next request before it goes back to the pool.
pub const KEPT_FOR: Duration = Duration::from_millis(50);

/// How long a connection passes from request to request before it goes back to the pool once.
pub const OUT_AT_MOST: Duration = Duration::from_secs(60);

/// A connection taken from the pool, and when.
#[derive(Debug)]
struct Out {
    conn: PoolConnection<Postgres>,
    since: Instant,
}

/// The database as every request step uses it: the pool, the connections a step just finished
/// with cleanly ([`Spares`]), and the time spent waiting for one (observed into `waited`).
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
    spares: Arc<Spares>,
    waited: Histogram,
}

impl Db {
    /// `returned` counts connections handed back to the pool, `waited` the acquire times.
    #[must_use]
    pub fn new(pool: PgPool, returned: Counter, waited: Histogram) -> Self {
        Self {
            pool,
            spares: Spares::new(returned),
            waited,
        }
    }

    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A connection for one request: a spare, else one from the pool; the wait observed.
    pub async fn acquire(&self) -> Result<Lease<'_>, sqlx::Error> {
        let started = Instant::now();
        let lease = self.spares.acquire(&self.pool).await;
        self.waited.observe(started.elapsed().as_secs_f64());
        lease
    }
}

/// The clean connections waiting for a request, and the requests waiting for a connection.
#[derive(Debug)]
pub struct Spares {
    /// With when each was kept, oldest first.
    kept: Mutex<Vec<(Out, Instant)>>,
    /// Longest-waiting first (a closed one gave up or got a connection from the pool).
    waiting: Mutex<VecDeque<oneshot::Sender<Out>>>,
    /// Connections handed back to sqlx's pool (each confirmed with a round trip).
    returned: Counter,
}

impl Spares {
    /// Spares counting returns to the pool in `returned`. With a tokio runtime at hand, a task
    /// sends connections left waiting past [`KEPT_FOR`] back to the pool; it ends with them.
    #[must_use]
    pub fn new(returned: Counter) -> Arc<Self> {
        let spares = Arc::new(Self {
            kept: Mutex::new(Vec::new()),
            waiting: Mutex::new(VecDeque::new()),
            returned,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(expire_while_alive(Arc::downgrade(&spares)));
        }
        spares
    }

    /// The most recently kept connection, else whichever comes first: one a request is done
    /// with, or one from `pool` (waiting as long as the pool's acquire timeout).
    pub async fn acquire<'a>(&'a self, pool: &PgPool) -> Result<Lease<'a>, sqlx::Error> {
        let out = if let Some(out) = self.take() {
            out
        } else {
            let (handoff, handed) = oneshot::channel();
            {
                let mut waiting = lock(&self.waiting);
                waiting.retain(|w| !w.is_closed());
                waiting.push_back(handoff);
            }
            // A connection handed over after the pool's came first is dropped with `handed`:
            // back to the pool the usual way.
            tokio::select! {
                biased;
                Ok(out) = handed => out,
                conn = pool.acquire() => Out { conn: conn?, since: Instant::now() },
            }
        };
        Ok(Lease {
            out: Some(out),
            spares: self,
        })
    }

    fn take(&self) -> Option<Out> {
        self.expire(Instant::now());
        lock(&self.kept).pop().map(|(out, _)| out)
    }

    /// Hands `out` to the longest-waiting request, or keeps it for the next one.
    fn keep(&self, mut out: Out) {
        loop {
            let Some(waiter) = lock(&self.waiting).pop_front() else {
                break;
            };
            match waiter.send(out) {
                Ok(()) => return,
                // That request stopped waiting: the next one, if any.
                Err(back) => out = back,
            }
        }
        lock(&self.kept).push((out, Instant::now()));
    }

    /// Sends the connections kept since before `now - KEPT_FOR` back to the pool.
    fn expire(&self, now: Instant) {
        let stale: Vec<_> = {
            let mut kept = lock(&self.kept);
            // Oldest first: the stale ones are a prefix.
            let fresh_from = kept.partition_point(|(_, at)| now.duration_since(*at) >= KEPT_FOR);
            kept.drain(..fresh_from).collect()
        };
        // Dropped outside the lock: each drop hands its connection to sqlx's return task.
        self.returned.inc_by(stale.len() as u64);
        drop(stale);
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        let kept = self.kept.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.returned.inc_by(kept.len() as u64);
    }
}

/// The lists are left consistent at every step, so a panic elsewhere while one was locked
/// leaves nothing to repair.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn expire_while_alive(spares: Weak<Spares>) {
    let mut tick = tokio::time::interval(KEPT_FOR);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(spares) = spares.upgrade() else {
            return;
        };
        spares.expire(Instant::now());
    }
}

/// A pooled connection for one request. Dropped, it goes back to sqlx's pool (with sqlx's
/// round trip); [`Lease::done`] passes it to the next request instead.
#[derive(Debug)]
pub struct Lease<'a> {
    out: Option<Out>,
    spares: &'a Spares,
}

impl Lease<'_> {
    /// The holder finished its statements (each one awaited to its end, no transaction open):
    /// the connection is clean and goes to the next request (or, out of the pool for
    /// [`OUT_AT_MOST`], back to the pool).
    pub fn done(mut self) {
        if let Some(out) = self.out.take_if(|out| out.since.elapsed() < OUT_AT_MOST) {
            debug_assert!(
                !out.conn.is_in_transaction(),
                "a lease given back mid-transaction"
            );
            self.spares.keep(out);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.out.is_some() {
            self.spares.returned.inc();
        }
    }
}

impl Deref for Lease<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        // `out` is `None` only inside `done` and `drop`.
        self.out
            .as_ref()
            .map_or_else(|| unreachable!(), |o| &*o.conn)
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.out
            .as_mut()
            .map_or_else(|| unreachable!(), |o| &mut *o.conn)
    }
}
