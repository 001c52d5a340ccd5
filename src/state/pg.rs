//! Runs in a shared PostgreSQL database (`--state postgres://…`): their journals, approval
//! answers and locks, so that an operator on any machine sees, approves, resumes or takes over
//! the same runs.
//!
//! - **Schema.** Created on first use under an advisory lock (twenty processes starting at once
//!   on an empty database create it once); `ripcord_schema` records the version for later
//!   migrations. A database written by a newer ripcord is refused, not guessed at.
//! - **Journal.** One row per record, holding the very line the file journal would hold (the
//!   record's JSON and its CRC-32), so both backends read and check records the same way.
//!   Records appended are sent on `commit` or `flush`: every record of a scheduling tick in one
//!   transaction (group commit). A transaction is lost or done whole; retried after a dropped
//!   connection, it writes nothing twice (rows are keyed by run and sequence number).
//! - **Leases.** A lock is a row of `ripcord_leases`: who holds the scope, since when, renewed
//!   when, for how long (`--lease-ttl`), and an epoch that grows with every holder. The holder
//!   renews every ttl/3 (every second while renewals fail). Every journal transaction first
//!   locks this session's lease rows and checks their epochs: once another session has taken a
//!   lease over, nothing this one sends is written. And this session starts nothing new once
//!   its last renewal is older than the ttl less a margin (`fence`): by the database's clock the
//!   lease is then still its own, so nobody else can have started anything.
//! - **Who answered.** An answer carries the OS identity its client claims, and the database
//!   role that wrote it, which the database vouches for (see docs/shared-state.md).
//!
//! Calls are synchronous (the session's traits are): each is a task on this backend's own
//! runtime, on a thread of its own, and the caller waits for its reply.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Config, Statement};

use super::lock::{LeaseInfo, LockError, LockHolder};
use super::{Answer, HeldLock, JournalWriter, Scope, StateBackend};
use crate::journal::{ReadJournal, Record};
use crate::session::supervisor::boot_ms;

// The PostgreSQL plugin's TLS settings (libpq's sslmode and sslrootcert over rustls), one
// source for both.
#[path = "../../plugins/postgres/src/tls.rs"]
#[allow(dead_code)]
mod tls;

use tls::chain;

/// The schema version this ripcord writes.
const VERSION: i32 = 2;
/// `pg_advisory_xact_lock` key taken while the schema is checked and created.
const SCHEMA_LOCK: i64 = 0x7269_7063_6f72_6401;

/// Migration `n` brings the schema from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE ripcord_runs (
    run_id     text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    journaled  boolean NOT NULL DEFAULT false
);
CREATE TABLE ripcord_records (
    run_id     text NOT NULL REFERENCES ripcord_runs ON DELETE CASCADE,
    seq        bigint NOT NULL,
    line       text NOT NULL,
    epoch      bigint NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE ripcord_answers (
    id        bigserial PRIMARY KEY,
    run_id    text NOT NULL REFERENCES ripcord_runs ON DELETE CASCADE,
    answer    text NOT NULL,
    db_role   text NOT NULL DEFAULT session_user,
    posted_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ripcord_answers_run ON ripcord_answers (run_id, id);
CREATE TABLE ripcord_leases (
    scope       text PRIMARY KEY,
    epoch       bigint NOT NULL,
    run_id      text NOT NULL,
    pid         integer NOT NULL,
    by_whom     text NOT NULL,
    host        text NOT NULL,
    started_at  text NOT NULL,
    acquired_at timestamptz NOT NULL,
    renewed_at  timestamptz NOT NULL,
    ttl_ms      bigint NOT NULL,
    released    boolean NOT NULL DEFAULT false
);
",
    r"
-- A takeover's note, kept on the lease until a session of the run has journaled it (a resume
-- that took the run over and then refused to go on must not lose it).
ALTER TABLE ripcord_leases ADD COLUMN taken_from text;
",
];

pub struct PgState {
    shown: String,
    again: String,
    inner: Arc<Inner>,
    /// This machine's copies of the journals it writes (`copies/` of the local state
    /// directory), for the break-glass path when the database is lost.
    copies: std::path::PathBuf,
}

struct Inner {
    handle: tokio::runtime::Handle,
    /// Dropped with the backend: ends its thread and runtime.
    _stop: tokio::sync::oneshot::Sender<()>,
    config: Config,
    tls: tls::Tls,
    shown: String,
    /// Connections: renewals have one of their own (never behind a slow statement), journal
    /// writes one, everything else one.
    conns: [tokio::sync::Mutex<Option<Conn>>; 3],
    ttl: Duration,
    held: Mutex<Held>,
    /// Whether a journal write of this session reached the database (its notes among them).
    journaled: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Held {
    /// Scopes held, each with its epoch.
    leases: Vec<(String, i64)>,
    /// When the last renewal that succeeded was sent (acquisitions count as renewals), on the
    /// boot clock (ms): a suspended machine's sleep counts.
    renewed: Option<u64>,
    /// Told the moment this session's leases may lapse, after each renewal (the supervisor,
    /// which then stops the steps of a frozen ripcord).
    deadline: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    /// How long releases may take, all together, once the first one begins.
    release_until: Option<Instant>,
    /// Why this session may write nothing more (a lease taken over, or lapsed).
    lost: Option<String>,
    /// A journal write that failed otherwise: the run stops at its next step.
    broken: Option<String>,
    renewing: bool,
}

/// A lease held; released (for the next holder to take at once) when dropped.
struct PgLease {
    inner: Arc<Inner>,
    key: String,
    epoch: i64,
    taken_from: Option<String>,
}

impl HeldLock for PgLease {
    fn taken_from(&self) -> Option<String> {
        self.taken_from.clone()
    }
}

impl Drop for PgLease {
    fn drop(&mut self) {
        let (key, epoch) = (self.key.clone(), self.epoch);
        self.inner.forget(&key, epoch);
        // Released even after the session stopped on a stale lease (the statement only touches
        // the lease if its epoch is still this one's); an unreachable database gets one second
        // for all of them (the leases lapse by themselves).
        let Ok(mut held) = self.inner.held.lock() else {
            return;
        };
        let until = *held
            .release_until
            .get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
        drop(held);
        if Instant::now() >= until {
            // The budget is spent (the database does not answer): the lease lapses by itself.
            return;
        }
        let journaled = self
            .inner
            .journaled
            .load(std::sync::atomic::Ordering::SeqCst);
        let inner = self.inner.clone();
        let _ = self.inner.block(async move {
            inner
                .with_client(OTHER, until, "release a lease", move |c| {
                    let key = key.clone();
                    Box::pin(async move {
                        c.execute(
                            "UPDATE ripcord_leases SET released = true, \
                                 renewed_at = clock_timestamp(), \
                                 taken_from = CASE WHEN $3 THEN NULL ELSE taken_from END \
                             WHERE scope = $1 AND epoch = $2",
                            &[&key, &epoch, &journaled],
                        )
                        .await
                    })
                })
                .await
        });
    }
}

/// The key of a scope in `ripcord_leases`.
fn key(scope: &Scope) -> String {
    match scope {
        Scope::Runbook(name) => format!("runbook:{name}"),
        Scope::Run(id) => format!("run:{id}"),
        Scope::Resource(name) => format!("scope:{name}"),
    }
}

/// Whether `url` names a PostgreSQL database rather than a directory.
pub fn is_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The URL without its password, for messages and printed commands: the user information ends
/// at the last `@` (a password written raw may hold `/`, `?`, `@`), and a `password=` parameter
/// is dropped.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let rest = match rest.rfind('@') {
        Some(at) => {
            let (userinfo, host) = rest.split_at(at);
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{user}{host}")
        }
        None => rest.to_string(),
    };
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (rest.as_str(), None),
    };
    let mut shown = format!("{scheme}://{base}");
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| !kv.to_ascii_lowercase().starts_with("password="))
            .collect();
        if !kept.is_empty() {
            shown.push('?');
            shown.push_str(&kept.join("&"));
        }
    }
    shown
}

/// Worth trying again on a new connection: the connection broke, or the server is restarting
/// (SQLSTATE classes 08 and 57P), or a serialization failure.
fn retriable(e: &tokio_postgres::Error) -> bool {
    // A certificate that does not verify is a setting to fix, not a blip.
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(inner) = source {
        if inner.downcast_ref::<rustls::Error>().is_some()
            || inner
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
        {
            return false;
        }
        source = inner.source();
    }
    match e.as_db_error() {
        // A broken connection (an I/O error under it, or closed); not a statement this side
        // got wrong, which no retry mends.
        None => {
            e.is_closed() || {
                let mut source: Option<&(dyn std::error::Error + 'static)> =
                    std::error::Error::source(e);
                let mut io = false;
                while let Some(inner) = source {
                    io |= inner.is::<io::Error>();
                    source = inner.source();
                }
                io
            }
        }
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57P") || code == "40001" || code == "40P01"
        }
    }
}

/// The error a fenced session's writes end with; `lease_lost` finds it again.
#[derive(Debug)]
pub struct LeaseLost(pub String);

impl std::fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LeaseLost {}

/// The lease message of an error, when that is what it is.
pub fn lease_lost(e: &io::Error) -> Option<String> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<LeaseLost>())
        .map(|l| l.0.clone())
}

/// Which connection a call uses.
const RENEW: usize = 0;
const WRITE: usize = 1;
const OTHER: usize = 2;

type Op<'c, T> = Pin<Box<dyn Future<Output = Result<T, tokio_postgres::Error>> + Send + 'c>>;

/// A connection, with the statements prepared on it (a statement is prepared once per
/// connection: each use after that is one round trip).
struct Conn {
    client: Client,
    prepared: std::collections::HashMap<&'static str, Statement>,
}

impl Conn {
    async fn prepared(&mut self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.prepared.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Inner {
    /// Runs `fut` on this backend's runtime and waits for it (callable from anywhere, an async
    /// context included).
    fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> io::Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| io::Error::other("the state database's worker has stopped"))
    }

    async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let client = tls::connect(&self.config, &self.tls).await?;
        // The server gives up on a statement before this side does (see `with_client`): a
        // statement this side timed out is never committed behind its back.
        client
            .batch_execute("SET statement_timeout = '5s'; SET lock_timeout = '4s'")
            .await?;
        Ok(client)
    }

    /// Runs `op` on the connection, connecting (again) as needed and retrying what a broken
    /// connection or a restarting server failed, until `until`.
    async fn with_client<T>(
        &self,
        slot: usize,
        until: Instant,
        what: &str,
        mut op: impl for<'c> FnMut(&'c mut Conn) -> Op<'c, T> + Send,
    ) -> io::Result<T> {
        let mut guard = self.conns[slot].lock().await;
        loop {
            let error = match guard.as_mut().filter(|c| !c.is_closed()) {
                Some(client) => {
                    // Up to 7 s, longer than the server's statement_timeout (5 s): what timed
                    // out here was cancelled there. Near the lease's end less (at least 1 s): a
                    // statement cut short then may still commit, which at worst leaves a start
                    // recorded for a step that never began (in doubt: never re-run blindly).
                    let left = until.saturating_duration_since(Instant::now());
                    let limit = left.clamp(Duration::from_secs(1), Duration::from_secs(7));
                    match tokio::time::timeout(limit, op(client)).await {
                        Ok(Ok(value)) => return Ok(value),
                        Ok(Err(e)) if !retriable(&e) => {
                            let detail = e
                                .as_db_error()
                                .map_or_else(|| chain(&e), |d| d.message().to_string());
                            return Err(io::Error::other(format!(
                                "{what} in {}: {detail}",
                                self.shown
                            )));
                        }
                        Ok(Err(e)) => chain(&e),
                        Err(_) => format!("no answer in {} s", limit.as_secs()),
                    }
                }
                None => {
                    let wait = until
                        .saturating_duration_since(Instant::now())
                        .clamp(Duration::from_secs(1), Duration::from_secs(7));
                    match tokio::time::timeout(wait, self.connect()).await {
                        Ok(Ok(client)) => {
                            *guard = Some(Conn {
                                client,
                                prepared: Default::default(),
                            });
                            continue;
                        }
                        // Refused (authentication, a certificate that does not verify): no
                        // retry.
                        Ok(Err(e)) if !retriable(&e) => {
                            let detail = e
                                .as_db_error()
                                .map_or_else(|| chain(&e), |d| d.message().to_string());
                            return Err(io::Error::other(format!(
                                "cannot {what}: the state database {} refused the connection: \
                                 {detail}",
                                self.shown
                            )));
                        }
                        Ok(Err(e)) => chain(&e),
                        Err(_) => format!("no connection within {} s", wait.as_secs()),
                    }
                }
            };
            // A connection in an unknown state is not used again.
            *guard = None;
            if Instant::now() + Duration::from_millis(250) >= until {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "cannot {what}: the state database {} did not answer ({error})",
                        self.shown
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn forget(&self, key: &str, epoch: i64) {
        let mut held = self.held.lock().expect("lease bookkeeping");
        held.leases.retain(|(k, e)| !(k == key && *e == epoch));
    }

    /// The margin before the ttl at which a holder stops: a fifth of it.
    fn stop_after(&self) -> Duration {
        self.ttl - self.ttl / 5
    }

    fn stop_after_ms(&self) -> u64 {
        self.stop_after().as_millis() as u64
    }

    /// When the session stops after the last renewal — it starts nothing more, and its
    /// supervisor stops the steps: a second (the supervisor's grace between SIGTERM and
    /// SIGKILL) before [`Inner::stop_after`], and never before half the ttl, so that a step that
    /// ignores SIGTERM is gone before the lease can be taken.
    fn kill_after_ms(&self) -> u64 {
        self.stop_after_ms()
            .saturating_sub(1000)
            .max(self.ttl.as_millis() as u64 / 2)
    }

    /// Until when a call may retry while the lease is surely this session's.
    fn lease_until(&self) -> Instant {
        let held = self.held.lock().expect("lease bookkeeping");
        match held.renewed {
            Some(r) => {
                let left = (r + self.stop_after_ms()).saturating_sub(boot_ms());
                Instant::now() + Duration::from_millis(left)
            }
            None => Instant::now() + Duration::from_secs(10),
        }
    }

    /// Whether this session may start something: it has lost no lease, and its last renewal
    /// is recent enough that no one else can have taken one.
    fn fence(&self) -> io::Result<()> {
        let mut held = self.held.lock().expect("lease bookkeeping");
        if held.lost.is_none()
            && !held.leases.is_empty()
            && let Some(renewed) = held.renewed
            && boot_ms().saturating_sub(renewed) > self.kill_after_ms()
        {
            held.lost = Some(format!(
                "last renewed {:.1} s ago (lease ttl {} s): this process was paused, or the \
                 state database {} did not answer; its supervisor stops its steps, it starts \
                 nothing more, and the run may be taken over once the lease expires",
                boot_ms().saturating_sub(renewed) as f64 / 1000.0,
                self.ttl.as_secs_f64(),
                self.shown
            ));
        }
        match (&held.lost, &held.broken) {
            (Some(why), _) => Err(io::Error::other(LeaseLost(why.clone()))),
            (None, Some(why)) => Err(io::Error::other(why.clone())),
            (None, None) => Ok(()),
        }
    }

    fn lose(&self, why: String) {
        let mut held = self.held.lock().expect("lease bookkeeping");
        held.lost.get_or_insert(why);
    }

    /// Renews every lease this session holds, every ttl/3, until the backend is dropped.
    async fn renew_forever(self: Arc<Self>) {
        let mut failed = false;
        loop {
            // A third of the stop point (at most a third of the ttl): two renewals can fail
            // or come late before the session must stop.
            let period = Duration::from_millis(self.kill_after_ms() / 3).min(self.ttl / 3);
            let wait = if failed {
                Duration::from_secs(1).min(period)
            } else {
                period
            };
            tokio::time::sleep(wait).await;
            let leases = self.held.lock().expect("lease bookkeeping").leases.clone();
            if leases.is_empty() {
                failed = false;
                continue;
            }
            let sent = boot_ms();
            let (keys, epochs): (Vec<String>, Vec<i64>) = leases.iter().cloned().unzip();
            let ttl_ms = self.ttl.as_millis() as i64;
            let until = Instant::now() + wait.max(Duration::from_secs(1));
            let renewed = self
                .with_client(RENEW, until, "renew the lease", |c| {
                    let (keys, epochs) = (keys.clone(), epochs.clone());
                    Box::pin(async move {
                        c.query(
                            "UPDATE ripcord_leases l SET renewed_at = clock_timestamp(), ttl_ms = $3 \
                             FROM unnest($1::text[], $2::bigint[]) AS h(scope, epoch) \
                             WHERE l.scope = h.scope AND l.epoch = h.epoch AND NOT l.released \
                             RETURNING l.scope",
                            &[&keys, &epochs, &ttl_ms],
                        )
                        .await
                    })
                })
                .await;
            match renewed {
                Ok(rows) => {
                    failed = false;
                    let kept: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                    let mut held = self.held.lock().expect("lease bookkeeping");
                    // Leases released or taken while this was under way are not judged by it.
                    let missing: Vec<&(String, i64)> = leases
                        .iter()
                        .filter(|l| !kept.contains(&l.0) && held.leases.contains(l))
                        .collect();
                    if let Some((scope, epoch)) = missing.first() {
                        held.lost.get_or_insert(format!(
                            "{scope} (epoch {epoch}) was taken over by another session after \
                             the lease expired; this session starts and records nothing more"
                        ));
                    } else if let Some(prev) = held.renewed
                        && held.lost.is_none()
                        && boot_ms() + 100 > prev + self.kill_after_ms()
                    {
                        // Renewed, but too late: the supervisor has stopped (or is stopping)
                        // the steps at the lease's end. The run stops rather than take their
                        // deaths for failures.
                        held.lost = Some(format!(
                            "its lease went {:.1} s without a renewal (lease ttl {} s): its \
                             supervisor stopped its steps at the lease's end; it starts \
                             nothing more",
                            boot_ms().saturating_sub(prev) as f64 / 1000.0,
                            self.ttl.as_secs_f64()
                        ));
                    } else if held.renewed.is_none_or(|r| r < sent) {
                        held.renewed = Some(sent);
                        if let Some(tell) = held.deadline.clone() {
                            drop(held);
                            tell(sent + self.kill_after_ms());
                        }
                    }
                }
                Err(_) => failed = true,
            }
        }
    }
}

impl PgState {
    /// Connects to the database at `url`, creating or checking the schema.
    pub fn open(url: &str, ttl: Duration) -> io::Result<PgState> {
        let shown = without_password(url);
        let (mut config, tls) = tls::config(url).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("--state {shown}: {e}"))
        })?;
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("ripcord");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("ripcord-state".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let _ = stopped.await;
                });
                runtime.shutdown_background();
            })?;
        let inner = Arc::new(Inner {
            handle,
            _stop: stop,
            config,
            tls,
            shown: shown.clone(),
            conns: Default::default(),
            ttl,
            held: Mutex::new(Held::default()),
            journaled: Default::default(),
        });
        let state = PgState {
            again: format!(" --state {}", crate::cli::shell_word(&shown)),
            shown,
            inner,
            copies: super::StateDir::resolve(None).copies_dir(),
        };
        state.migrate()?;
        Ok(state)
    }

    fn until(&self) -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    /// Runs `op` with retries, on the backend's runtime, waiting for it.
    fn call<T: Send + 'static>(
        &self,
        what: &'static str,
        op: impl for<'c> FnMut(&'c mut Conn) -> Op<'c, T> + Send + 'static,
    ) -> io::Result<T> {
        let inner = self.inner.clone();
        let until = self.until();
        self.inner
            .block(async move { inner.with_client(OTHER, until, what, op).await })?
    }

    fn migrate(&self) -> io::Result<()> {
        // Up to date: nothing to create (a role with no CREATE right works).
        let at = self.call("read the schema version", |c| {
            Box::pin(async move {
                let exists: bool = c
                    .query_one("SELECT to_regclass('ripcord_schema') IS NOT NULL", &[])
                    .await?
                    .get(0);
                if !exists {
                    return Ok(0);
                }
                let row = c
                    .query_one("SELECT coalesce(max(version), 0) FROM ripcord_schema", &[])
                    .await?;
                Ok(row.get::<_, i32>(0))
            })
        })?;
        if at == VERSION {
            return Ok(());
        }
        let newest = self.call("create the schema", |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                    .await?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS ripcord_schema (\
                        version integer PRIMARY KEY, \
                        applied_at timestamptz NOT NULL DEFAULT clock_timestamp())",
                )
                .await?;
                let row = tx
                    .query_one("SELECT coalesce(max(version), 0) FROM ripcord_schema", &[])
                    .await?;
                let at: i32 = row.get(0);
                if at > VERSION {
                    return Ok(at);
                }
                for (n, sql) in MIGRATIONS.iter().enumerate().skip(at as usize) {
                    tx.batch_execute(sql).await?;
                    tx.execute(
                        "INSERT INTO ripcord_schema (version) VALUES ($1)",
                        &[&(n as i32 + 1)],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(at)
            })
        })?;
        if newest > VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the state database {} has schema version {newest}, written by a newer \
                     ripcord (this one knows version {VERSION}): use that ripcord",
                    self.shown
                ),
            ));
        }
        Ok(())
    }

    fn check_id(run_id: &str) -> io::Result<()> {
        super::dir::StateDir::check_run_id(run_id)
    }

    /// A run's journal lines, with their sequence numbers.
    fn lines(&self, run_id: &str) -> io::Result<Vec<(i64, String)>> {
        let id = run_id.to_string();
        self.call("read the journal", move |c| {
            let id = id.clone();
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT seq, line FROM ripcord_records WHERE run_id = $1 ORDER BY seq",
                        &[&id],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
                    .collect::<Vec<_>>())
            })
        })
    }

    /// The journal of `run_id`, appending after `seq` records.
    fn writer(&self, run_id: &str, seq: i64, durable: bool, copy: Option<LocalCopy>) -> PgJournal {
        let (batches, incoming) = tokio::sync::mpsc::unbounded_channel();
        self.inner.handle.spawn(
            self.inner
                .clone()
                .write_journal(run_id.to_string(), incoming),
        );
        PgJournal {
            inner: self.inner.clone(),
            next: seq,
            pending: Vec::new(),
            durable,
            batches,
            copy,
        }
    }
}

impl StateBackend for PgState {
    fn location(&self) -> String {
        format!("the state database {}", self.shown)
    }

    fn again(&self) -> &str {
        &self.again
    }

    fn shared(&self) -> bool {
        true
    }

    fn create_run(&self, wanted: &str) -> io::Result<String> {
        Self::check_id(wanted)?;
        let wanted = wanted.to_string();
        self.call("create a run", move |c| {
            let wanted = wanted.clone();
            Box::pin(async move {
                let mut n = 1;
                loop {
                    let id = super::dir::run_id_candidate(&wanted, n);
                    let made = c
                        .execute(
                            "INSERT INTO ripcord_runs (run_id) VALUES ($1) ON CONFLICT DO NOTHING",
                            &[&id],
                        )
                        .await?;
                    if made == 1 {
                        return Ok(id);
                    }
                    n += 1;
                }
            })
        })
    }

    fn discard_run(&self, run_id: &str) {
        let id = run_id.to_string();
        let _ = self.call("discard a run", move |c| {
            let id = id.clone();
            Box::pin(async move {
                c.execute(
                    "DELETE FROM ripcord_runs WHERE run_id = $1 AND NOT journaled",
                    &[&id],
                )
                .await
            })
        });
    }

    fn lock(
        &self,
        scope: &Scope,
        holder: &LockHolder,
        takeover: bool,
    ) -> Result<Box<dyn HeldLock>, LockError> {
        let key = key(scope);
        // A lease whose holder stopped renewing it (and did not release it) is taken by a
        // new run of the runbook or of a shared scope; the run itself only by `--takeover`.
        let may_take_expired = takeover || !matches!(scope, Scope::Run(_));
        let ttl_ms = self.inner.ttl.as_millis() as i64;
        let h = holder.clone();
        let sent = boot_ms();
        let k = key.clone();
        let got = self
            .call("take a lease", move |c| {
                let (k, h) = (k.clone(), h.clone());
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    // Who had it, when it was not released: a takeover says whom it took from
                    // (and a note of an earlier takeover not yet journaled is carried on).
                    let old = tx
                        .query_opt(
                            "SELECT CASE WHEN NOT released THEN \
                                 format('taken over by %s: %s (run %s, pid %s on %s, by %s; its \
                                 lease, epoch %s, last renewed %s s before)', $2::text, scope, \
                                 run_id, pid, host, by_whom, epoch, round(extract(epoch FROM \
                                 clock_timestamp() - renewed_at)::numeric, 1)) \
                                 WHEN scope LIKE 'run:%' THEN taken_from END, NOT released \
                             FROM ripcord_leases WHERE scope = $1 FOR UPDATE",
                            &[&k, &h.by],
                        )
                        .await?
                        .map(|r| (r.get::<_, Option<String>>(0), r.get::<_, bool>(1)));
                    let fresh = old.as_ref().is_some_and(|(_, unreleased)| *unreleased);
                    let old = old.and_then(|(note, _)| note);
                    // Kept on the row until journaled: for the run's own lease only (another
                    // scope's next holder is another run).
                    let kept = old.clone().filter(|_| k.starts_with("run:"));
                    let row = tx
                        .query_opt(
                            "INSERT INTO ripcord_leases AS l (scope, epoch, run_id, pid, by_whom, \
                                 host, started_at, acquired_at, renewed_at, ttl_ms, taken_from) \
                             VALUES ($1, 1, $2, $3, $4, $5, $6, clock_timestamp(), \
                                 clock_timestamp(), $7, $9) \
                             ON CONFLICT (scope) DO UPDATE SET epoch = l.epoch + 1, \
                                 run_id = EXCLUDED.run_id, pid = EXCLUDED.pid, \
                                 by_whom = EXCLUDED.by_whom, host = EXCLUDED.host, \
                                 started_at = EXCLUDED.started_at, \
                                 acquired_at = EXCLUDED.acquired_at, \
                                 renewed_at = EXCLUDED.renewed_at, ttl_ms = EXCLUDED.ttl_ms, \
                                 released = false, taken_from = EXCLUDED.taken_from \
                             WHERE l.released OR ($8 AND l.renewed_at \
                                 + l.ttl_ms * interval '1 millisecond' < clock_timestamp()) \
                             RETURNING l.epoch",
                            &[
                                &k,
                                &h.run_id,
                                &(h.pid as i32),
                                &h.by,
                                &h.host,
                                &h.started_at,
                                &ttl_ms,
                                &may_take_expired,
                                &kept,
                            ],
                        )
                        .await?;
                    if let Some(row) = row {
                        tx.commit().await?;
                        return Ok(Ok((row.get::<_, i64>(0), old, fresh)));
                    }
                    drop(tx);
                    let row = c
                        .query_opt(
                            "SELECT run_id, pid, by_whom, host, started_at, epoch, ttl_ms, \
                                 (extract(epoch FROM clock_timestamp() - renewed_at) * 1000)::bigint \
                             FROM ripcord_leases WHERE scope = $1",
                            &[&k],
                        )
                        .await?;
                    Ok(Err(row.map(|r| LockHolder {
                        run_id: r.get(0),
                        pid: r.get::<_, i32>(1) as u32,
                        by: r.get(2),
                        host: r.get(3),
                        started_at: r.get(4),
                        lease: Some(LeaseInfo {
                            epoch: r.get(5),
                            ttl_ms: r.get::<_, i64>(6).max(0) as u64,
                            age_ms: r.get::<_, i64>(7).max(0) as u64,
                        }),
                    })))
                })
            })
            .map_err(LockError::Io)?;
        let (epoch, taken_from, fresh) = got.map_err(|h| LockError::Held(h.map(Box::new)))?;
        let start = {
            let mut held = self.inner.held.lock().expect("lease bookkeeping");
            if held.leases.is_empty() {
                held.renewed = Some(sent);
                held.lost = None;
            }
            held.leases.push((key.clone(), epoch));
            !std::mem::replace(&mut held.renewing, true)
        };
        if start {
            self.inner.handle.spawn(self.inner.clone().renew_forever());
        }
        if let Some(note) = &taken_from
            && fresh
            && !takeover
            && !matches!(scope, Scope::Run(_))
        {
            eprintln!(
                "ripcord: {note}: its holder stopped renewing it (that run can be resumed only \
                 with --takeover)"
            );
        }
        Ok(Box::new(PgLease {
            inner: self.inner.clone(),
            key,
            epoch,
            taken_from,
        }))
    }

    fn is_held(&self, scope: &Scope) -> io::Result<bool> {
        let k = key(scope);
        self.call("read a lease", move |c| {
            let k = k.clone();
            Box::pin(async move {
                let row = c
                    .query_opt(
                        "SELECT NOT released AND renewed_at + ttl_ms * interval '1 millisecond' \
                             >= clock_timestamp() \
                         FROM ripcord_leases WHERE scope = $1",
                        &[&k],
                    )
                    .await?;
                Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
            })
        })
    }

    fn create_journal(&self, run_id: &str, durable: bool) -> io::Result<Box<dyn JournalWriter>> {
        Self::check_id(run_id)?;
        let id = run_id.to_string();
        self.call("create the journal", move |c| {
            let id = id.clone();
            Box::pin(async move {
                c.execute(
                    "UPDATE ripcord_runs SET journaled = true WHERE run_id = $1",
                    &[&id],
                )
                .await
            })
        })?;
        let copy = durable.then(|| LocalCopy::start(&self.copies, run_id, &[]));
        Ok(Box::new(self.writer(run_id, 0, durable, copy.flatten())))
    }

    fn reopen_journal(&self, run_id: &str, durable: bool) -> io::Result<Box<dyn JournalWriter>> {
        Self::check_id(run_id)?;
        let lines = self.lines(run_id)?;
        let next = lines.last().map_or(0, |(seq, _)| seq + 1);
        let copy = if durable {
            let lines: Vec<String> = lines.into_iter().map(|(_, l)| l).collect();
            LocalCopy::start(&self.copies, run_id, &lines)
        } else {
            None
        };
        Ok(Box::new(self.writer(run_id, next, durable, copy)))
    }

    fn read_run(&self, run_id: &str) -> io::Result<ReadJournal> {
        Self::check_id(run_id)?;
        let lines = self.lines(run_id)?;
        if lines.is_empty() {
            let known = self.run_ids().unwrap_or_default();
            let hint = match known.last() {
                Some(last) => format!("; the newest is {last} (see `ripcord runs{}`)", self.again),
                None => String::new(),
            };
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no run `{run_id}` in {}{hint}", self.location()),
            ));
        }
        let name = format!("run {run_id} in {}", self.location());
        let mut records = Vec::with_capacity(lines.len());
        for (n, (seq, line)) in lines.iter().enumerate() {
            if *seq != n as i64 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{name}: record {n} is missing"),
                ));
            }
            let record = crate::journal::decode(format!("{line}\n").as_bytes()).map_err(|why| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{name}: record {n} is corrupt ({why})"),
                )
            })?;
            records.push(record);
        }
        if !matches!(records.first(), Some(Record::RunStarted { .. })) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name}: the journal does not start with the run's start record"),
            ));
        }
        Ok(ReadJournal {
            records,
            valid_len: 0,
            torn_tail: false,
        })
    }

    fn run_ids(&self) -> io::Result<Vec<String>> {
        self.call("list the runs", |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT run_id FROM ripcord_runs r WHERE EXISTS \
                             (SELECT 1 FROM ripcord_records x WHERE x.run_id = r.run_id) \
                         ORDER BY run_id",
                        &[],
                    )
                    .await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
        })
    }

    fn post_answer(&self, run_id: &str, answer: &Answer) -> io::Result<()> {
        Self::check_id(run_id)?;
        let id = run_id.to_string();
        let json = serde_json::to_string(answer).map_err(io::Error::other)?;
        self.call("post the answer", move |c| {
            let (id, json) = (id.clone(), json.clone());
            Box::pin(async move {
                c.execute(
                    "INSERT INTO ripcord_answers (run_id, answer) VALUES ($1, $2)",
                    &[&id, &json],
                )
                .await
            })
        })?;
        Ok(())
    }

    fn answers(&self, run_id: &str) -> io::Result<Vec<Answer>> {
        Self::check_id(run_id)?;
        let id = run_id.to_string();
        let rows = self.call("read the answers", move |c| {
            let id = id.clone();
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT id, answer, db_role FROM ripcord_answers WHERE run_id = $1 \
                         ORDER BY id",
                        &[&id],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| {
                        (
                            r.get::<_, i64>(0),
                            r.get::<_, String>(1),
                            r.get::<_, String>(2),
                        )
                    })
                    .collect::<Vec<_>>())
            })
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, json, role)| {
                let mut answer: Answer = serde_json::from_str(&json).ok()?;
                answer.id = format!("{id:020}");
                answer.by.db_role = Some(role);
                Some(answer)
            })
            .collect())
    }

    fn lease_lost(&self) -> Option<String> {
        self.inner.held.lock().ok()?.lost.clone()
    }

    fn may_start(&self) -> io::Result<()> {
        self.inner.fence()
    }

    fn watch_deadline(&self, until: Box<dyn Fn(u64) + Send + Sync>) {
        let mut held = self.inner.held.lock().expect("lease bookkeeping");
        if let Some(renewed) = held.renewed {
            until(renewed + self.inner.kill_after_ms());
        }
        held.deadline = Some(Arc::from(until));
    }
}

/// A run's journal in the database. Records wait in memory until `flush` or a commit hands them
/// to the journal's writer task, which sends every batch waiting in one statement (group
/// commit) that first locks this session's lease rows and checks their epochs. `flush` does not
/// wait; `commit` waits for the database's commit, `commit_later` answers when it comes.
struct PgJournal {
    inner: Arc<Inner>,
    next: i64,
    pending: Vec<String>,
    /// Dry-runs and pre-flights judge no lease freshness before starting steps.
    durable: bool,
    batches: tokio::sync::mpsc::UnboundedSender<Batch>,
    /// This machine's copy of the journal (real runs).
    copy: Option<LocalCopy>,
}

/// This machine's copy of a shared journal, `copies/RUN_ID/journal.jsonl` in the local state
/// directory: every line this session hands to the database, written before it is sent (so it
/// may hold lines a fenced session could not record). Best effort: a copy that cannot be
/// written is said once on stderr and given up; the database is the record.
struct LocalCopy {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl LocalCopy {
    fn start(dir: &std::path::Path, run_id: &str, lines: &[String]) -> Option<LocalCopy> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let run_dir = dir.join(run_id);
        let path = run_dir.join(crate::journal::JOURNAL_FILE);
        let made = (|| -> io::Result<std::fs::File> {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&run_dir)?;
            let mut text = String::new();
            for line in lines {
                text.push_str(line);
                text.push('\n');
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(text.as_bytes())?;
            Ok(file)
        })();
        match made {
            Ok(file) => Some(LocalCopy { file, path }),
            Err(e) => {
                eprintln!(
                    "ripcord: warning: no local copy of the journal at {}: {e}",
                    path.display()
                );
                None
            }
        }
    }

    fn write(copy: &mut Option<LocalCopy>, lines: &[String]) {
        use std::io::Write;
        let Some(c) = copy else { return };
        let mut text = String::new();
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        if let Err(e) = c.file.write_all(text.as_bytes()) {
            eprintln!(
                "ripcord: warning: the local copy of the journal at {} stops here: {e}",
                c.path.display()
            );
            *copy = None;
        }
    }
}

/// Who waits for a batch to be committed.
enum Ack {
    Async(crate::state::DurableSender),
    Blocking(std::sync::mpsc::SyncSender<io::Result<()>>),
}

impl Ack {
    fn send(self, result: &Result<(), String>) {
        let result = result.clone().map_err(|why| match lease_message(&why) {
            Some(lease) => io::Error::other(LeaseLost(lease)),
            None => io::Error::other(why),
        });
        match self {
            Ack::Async(tx) => {
                let _ = tx.send(result);
            }
            Ack::Blocking(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// Records to write from `first` on (possibly none), and who waits for them.
struct Batch {
    first: i64,
    lines: Vec<String>,
    ack: Option<Ack>,
}

/// Error texts of the writer carry this prefix when the lease was lost.
const LEASE: &str = "lease: ";

fn lease_message(why: &str) -> Option<String> {
    why.strip_prefix(LEASE).map(str::to_string)
}

const APPEND: &str = "WITH fence AS ( \
        SELECT count(*) AS held FROM ( \
            SELECT 1 FROM ripcord_leases l \
            JOIN unnest($1::text[], $2::bigint[]) AS h(scope, epoch) \
                ON l.scope = h.scope AND l.epoch = h.epoch \
            WHERE NOT l.released FOR SHARE OF l) AS kept), \
    written AS ( \
        INSERT INTO ripcord_records (run_id, seq, line, epoch) \
        SELECT $3, $4 + t.n - 1, t.line, $5 \
        FROM unnest($6::text[]) WITH ORDINALITY AS t(line, n) \
        WHERE (SELECT held FROM fence) = cardinality($1::text[]) \
        ON CONFLICT (run_id, seq) DO NOTHING RETURNING 1) \
    SELECT (SELECT held FROM fence), (SELECT count(*) FROM written)";

impl Inner {
    /// The writer task of one run's journal: batches in order, every one waiting at a time in
    /// one statement. After a failure, every later batch fails with the same error (nothing is
    /// written out of order).
    async fn write_journal(
        self: Arc<Self>,
        run_id: String,
        mut batches: tokio::sync::mpsc::UnboundedReceiver<Batch>,
    ) {
        let mut failed: Option<String> = None;
        while let Some(first) = batches.recv().await {
            let mut waiting = vec![first];
            while let Ok(more) = batches.try_recv() {
                waiting.push(more);
            }
            let lines: Vec<String> = waiting.iter().flat_map(|b| b.lines.clone()).collect();
            let from = waiting[0].first;
            let result = match &failed {
                Some(why) => Err(why.clone()),
                None if lines.is_empty() => Ok(()),
                None => self.append(&run_id, from, lines).await,
            };
            if result.is_ok() {
                self.journaled
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            if let Err(why) = &result {
                failed.get_or_insert_with(|| why.clone());
                match lease_message(why) {
                    Some(lease) => self.lose(lease),
                    None => {
                        let mut held = self.held.lock().expect("lease bookkeeping");
                        held.broken.get_or_insert_with(|| why.clone());
                    }
                }
            }
            for batch in waiting {
                if let Some(ack) = batch.ack {
                    ack.send(&result);
                }
            }
        }
    }

    /// One statement: the lease check and the records, retried on a new connection while the
    /// lease is surely still this session's (a retry writes nothing twice).
    async fn append(&self, run_id: &str, first: i64, lines: Vec<String>) -> Result<(), String> {
        let until = self.lease_until();
        let (keys, epochs) = {
            let held = self.held.lock().expect("lease bookkeeping");
            let (keys, epochs): (Vec<String>, Vec<i64>) = held.leases.iter().cloned().unzip();
            (keys, epochs)
        };
        let run_key = format!("run:{run_id}");
        let run_epoch = keys
            .iter()
            .zip(&epochs)
            .find(|(k, _)| **k == run_key)
            .map_or(0, |(_, e)| *e);
        let run_id = run_id.to_string();
        let (run_id2, lines2, count) = (run_id.clone(), lines.clone(), lines.len() as i64);
        let k = keys.clone();
        let held = self
            .with_client(WRITE, until, "write the journal", move |c| {
                let (keys, epochs, lines, run_id) =
                    (k.clone(), epochs.clone(), lines.clone(), run_id.clone());
                Box::pin(async move {
                    let statement = c.prepared(APPEND).await?;
                    let row = c
                        .query_one(
                            &statement,
                            &[&keys, &epochs, &run_id, &first, &run_epoch, &lines],
                        )
                        .await?;
                    Ok((row.get::<_, i64>(0), row.get::<_, i64>(1)))
                })
            })
            .await
            .map_err(|e| {
                // Unreachable for as long as the lease was surely ours: it has lapsed.
                if e.kind() == io::ErrorKind::TimedOut {
                    format!("{LEASE}the journal could not be written in time: {e}")
                } else {
                    e.to_string()
                }
            })?;
        let (held, written) = held;
        if held == keys.len() as i64 && written == count {
            return Ok(());
        }
        if held == keys.len() as i64 {
            // Some were there already: a retry of a statement whose answer was lost wrote them,
            // or they are another session's. Only the first is this session's to accept.
            return self.same_lines(&run_id2, first, &lines2).await;
        }
        // Which one: for the message.
        let lost = self
            .with_client(
                OTHER,
                Instant::now() + Duration::from_secs(5),
                "read the leases",
                move |c| {
                    let keys = keys.clone();
                    Box::pin(async move {
                        let rows = c
                            .query(
                                "SELECT scope, epoch, run_id, pid, host FROM ripcord_leases \
                                 WHERE scope = ANY($1)",
                                &[&keys],
                            )
                            .await?;
                        Ok(rows
                            .iter()
                            .map(|r| {
                                (
                                    r.get::<_, String>(0),
                                    r.get::<_, i64>(1),
                                    r.get::<_, String>(2),
                                    r.get::<_, i32>(3),
                                    r.get::<_, String>(4),
                                )
                            })
                            .collect::<Vec<_>>())
                    })
                },
            )
            .await
            .unwrap_or_default();
        let held = self.held.lock().expect("lease bookkeeping").leases.clone();
        let taker = held.iter().find_map(|(scope, epoch)| {
            lost.iter()
                .find(|l| l.0 == *scope && l.1 != *epoch)
                .map(|l| {
                    format!(
                        "{scope} was taken over by run {} (pid {} on {}, epoch {})",
                        l.2, l.3, l.4, l.1
                    )
                })
        });
        Err(format!(
            "{LEASE}{} after the lease expired; nothing more of this session is recorded",
            taker.unwrap_or_else(|| "one of its scopes was taken over".to_string())
        ))
    }
}

impl Inner {
    /// Whether the records from `first` in the database are `lines`.
    async fn same_lines(&self, run_id: &str, first: i64, lines: &[String]) -> Result<(), String> {
        let (id, n) = (run_id.to_string(), lines.len() as i64);
        let stored: Vec<String> = self
            .with_client(
                WRITE,
                Instant::now() + Duration::from_secs(10),
                "read the journal back",
                move |c| {
                    let id = id.clone();
                    Box::pin(async move {
                        let rows = c
                            .query(
                                "SELECT line FROM ripcord_records WHERE run_id = $1 \
                                 AND seq >= $2 AND seq < $2 + $3 ORDER BY seq",
                                &[&id, &first, &n],
                            )
                            .await?;
                        Ok(rows.iter().map(|r| r.get(0)).collect())
                    })
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        if stored.as_slice() == lines {
            Ok(())
        } else {
            Err(format!(
                "the journal of run {run_id} in the database already holds other records from \
                 record {first} on: another session wrote them; nothing more of this one is \
                 recorded"
            ))
        }
    }
}

impl PgJournal {
    fn send(&mut self, ack: Option<Ack>) -> io::Result<()> {
        // The local copy takes every line, even one this session may no longer record: it is
        // what this machine did.
        let lines = std::mem::take(&mut self.pending);
        LocalCopy::write(&mut self.copy, &lines);
        self.inner.fence()?;
        let batch = Batch {
            first: self.next,
            ack,
            lines,
        };
        self.next += batch.lines.len() as i64;
        self.batches
            .send(batch)
            .map_err(|_| io::Error::other("the journal's writer has stopped"))
    }
}

impl JournalWriter for PgJournal {
    fn append(&mut self, record: &Record) -> io::Result<()> {
        let line = crate::journal::encode(record);
        self.pending
            .push(line.strip_suffix('\n').unwrap_or(&line).to_string());
        Ok(())
    }

    fn commit(&mut self) -> io::Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.send(Some(Ack::Blocking(tx)))?;
        rx.recv()
            .map_err(|_| io::Error::other("the journal's writer has stopped"))?
    }

    fn commit_later(&mut self) -> io::Result<crate::state::Durable> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Some(Ack::Async(tx)))?;
        Ok(rx)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            // A write that failed since is reported here.
            return self.inner.fence();
        }
        self.send(None)
    }

    fn fence(&mut self) -> io::Result<()> {
        if self.durable {
            self.inner.fence()
        } else {
            Ok(())
        }
    }

    fn watch_every(&self) -> Option<Duration> {
        self.durable
            .then(|| (self.inner.ttl / 10).max(Duration::from_millis(100)))
    }
}

impl Drop for PgJournal {
    fn drop(&mut self) {
        // What was appended and not yet sent (a session ending on an error) is sent, and waited
        // for, if the lease still allows it.
        let _ = self.commit();
    }
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn a_password_is_never_shown() {
        for (url, shown) in [
            (
                "postgres://bob:s3cret@db:5432/rc?sslmode=disable",
                "postgres://bob@db:5432/rc?sslmode=disable",
            ),
            ("postgres://bob:pa/ss@db/rc", "postgres://bob@db/rc"),
            ("postgres://bob:pa?ss@db/rc", "postgres://bob@db/rc"),
            ("postgres://bob:p@ss@db/rc", "postgres://bob@db/rc"),
            (
                "postgresql://bob@db/rc?sslmode=require&password=SECRET&x=1",
                "postgresql://bob@db/rc?sslmode=require&x=1",
            ),
            ("postgres://db/rc?Password=SECRET", "postgres://db/rc"),
            ("postgres://db/rc", "postgres://db/rc"),
        ] {
            assert_eq!(without_password(url), shown, "{url}");
        }
    }
}
