//! The de-duplication inbox: which messages each endpoint has already handled.
//!
//! A broker delivers at least once, so a message whose handling succeeded may come again (the
//! host died before its ack reached the broker, a connection dropped, a publisher resent it).
//! The inbox remembers, for a retention window, the ids of the messages an endpoint handled,
//! so such a redelivery is acked without running the handler a second time. The key is the
//! pair (endpoint, message id): one event is handled by every endpoint subscribed to it.
//!
//! Three stores, chosen by `[inbox] store`:
//! - [`FileInbox`] (`file`, the default): an append-only log in the host's data directory,
//!   loaded into memory at start-up; one host process per directory.
//! - [`PostgresInbox`] (`postgres`): a table shared by any number of hosts.
//! - [`NoInbox`] (`off`): remembers nothing, so every redelivery is handled again.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use courier_host::inbox::{self, InboxConfig};
//!
//! let inbox = inbox::open(&InboxConfig::default()).await?;
//! if !inbox.seen("payment", "0199a3b2-…").await? {
//!     // … run the handler, release its outbox …
//!     inbox.record("payment", "0199a3b2-…").await?;
//! }
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::future::Future;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

use crate::config::redact_url;

/// The longest retention accepted: ten years.
const MAX_RETENTION_HOURS: u64 = 87_600;
/// A table name leaves room for its index, `<table>_handled_at`, within PostgreSQL's 63 bytes.
const MAX_TABLE_LEN: usize = 52;
/// How long opening a PostgreSQL connection may take when the URL does not say.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[inbox]` table of the host configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct InboxConfig {
    /// `"file"` (default), `"postgres"`, or `"off"`.
    pub store: InboxStore,
    /// How long a handled id is remembered, in hours (default 72).
    pub retention_hours: u64,
    /// Directory of the file store (default `"courier-data"`).
    pub data_dir: PathBuf,
    /// The PostgreSQL URL when `store = "postgres"`, e.g.
    /// `"postgres://postgres@127.0.0.1:5432/test"`. Required then.
    pub postgres_url: Option<String>,
    /// Table name for postgres (default `"courier_inbox"`); a plain lowercase identifier.
    pub table: String,
}

/// Where the inbox keeps what it remembers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboxStore {
    /// An append-only log file in `data_dir`.
    #[default]
    File,
    /// A table in PostgreSQL.
    Postgres,
    /// No de-duplication.
    Off,
}

impl Default for InboxConfig {
    fn default() -> Self {
        InboxConfig {
            store: InboxStore::File,
            retention_hours: 72,
            data_dir: PathBuf::from("courier-data"),
            postgres_url: None,
            table: "courier_inbox".to_owned(),
        }
    }
}

impl InboxConfig {
    /// Checks what serde cannot; every error names the key (`inbox.retention_hours`, …).
    pub fn validate(&self) -> Result<()> {
        if self.retention_hours < 1 {
            bail!("inbox.retention_hours must be at least 1");
        }
        if self.retention_hours > MAX_RETENTION_HOURS {
            bail!(
                "inbox.retention_hours = {} is too large: it must be at most {MAX_RETENTION_HOURS} (ten years)",
                self.retention_hours
            );
        }
        if !is_plain_identifier(&self.table) {
            bail!(
                "inbox.table = {:?} is not a plain identifier: use lowercase letters, digits and \
                 underscores, not starting with a digit, at most {MAX_TABLE_LEN} characters",
                self.table
            );
        }
        match self.store {
            InboxStore::File => {
                if self.data_dir.as_os_str().is_empty() {
                    bail!("inbox.data_dir must not be empty");
                }
                if let Some(url) = &self.postgres_url {
                    bail!(
                        "inbox.postgres_url = {:?} is set but inbox.store = \"file\": set inbox.store = \"postgres\" to use it",
                        redact_postgres_url(url)
                    );
                }
            }
            InboxStore::Postgres => {
                let url = self.postgres_url.as_deref().unwrap_or_default();
                if url.is_empty() {
                    bail!("inbox.postgres_url must be set when inbox.store = \"postgres\"");
                }
                PgTarget::parse(url)?;
            }
            InboxStore::Off => {}
        }
        Ok(())
    }

    fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_hours.saturating_mul(3600))
    }
}

/// A store of the messages each endpoint handled.
#[async_trait]
pub trait Inbox: Send + Sync + std::fmt::Debug {
    /// Whether `endpoint` handled `message_id` within the retention window.
    async fn seen(&self, endpoint: &str, message_id: &str) -> Result<bool>;
    /// Records that `endpoint` handled `message_id` now. Recording twice is not an error.
    async fn record(&self, endpoint: &str, message_id: &str) -> Result<()>;
    /// Forgets entries older than the retention window; returns how many were forgotten.
    async fn prune(&self) -> Result<u64>;
    /// A short description for logs, without credentials.
    fn describe(&self) -> String;
}

/// Opens the store the config names (`off` gives an inbox that never remembers anything).
pub async fn open(config: &InboxConfig) -> Result<Arc<dyn Inbox>> {
    config.validate()?;
    let inbox: Arc<dyn Inbox> = match config.store {
        InboxStore::File => Arc::new(FileInbox::open(&config.data_dir, config.retention()).await?),
        InboxStore::Postgres => {
            let url = config.postgres_url.as_deref().unwrap_or_default();
            Arc::new(PostgresInbox::open(url, &config.table, config.retention()).await?)
        }
        InboxStore::Off => Arc::new(NoInbox),
    };
    Ok(inbox)
}

/// Lowercase ASCII letters, digits and underscores, not starting with a digit.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= MAX_TABLE_LEN
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while the lock was held cannot leave the map or the file half-updated in a way
    // that matters here: at worst one record is missing, which means one duplicate handled.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// off
// ---------------------------------------------------------------------------------------------

/// The inbox of `store = "off"`: remembers nothing, so every redelivery runs the handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoInbox;

#[async_trait]
impl Inbox for NoInbox {
    async fn seen(&self, _endpoint: &str, _message_id: &str) -> Result<bool> {
        Ok(false)
    }

    async fn record(&self, _endpoint: &str, _message_id: &str) -> Result<()> {
        Ok(())
    }

    async fn prune(&self) -> Result<u64> {
        Ok(0)
    }

    fn describe(&self) -> String {
        "off (no de-duplication)".to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// file
// ---------------------------------------------------------------------------------------------

/// One line of `inbox.log`: JSON, so an id may hold spaces, tabs or newlines.
#[derive(Debug, Serialize, Deserialize)]
struct LogLine<'a> {
    #[serde(borrow)]
    endpoint: Cow<'a, str>,
    #[serde(borrow)]
    message_id: Cow<'a, str>,
    handled_at_ms: u64,
}

/// The file store: an append-only log `<data_dir>/inbox.log`, held in memory as a map.
///
/// Opening reads the log into memory, dropping entries older than the retention and skipping
/// (with a warning) any line that does not parse, such as the torn last line of a process
/// killed mid-write; a torn tail is cut off so that later appends start on a line of their own.
/// [`seen`](Inbox::seen) is a lookup in memory. [`record`](Inbox::record) appends one line with
/// a single `write`, on the caller's thread (on the blocking pool if a prune or another record
/// holds the log): once it returns, the line is in the page cache, so the record survives the
/// process being killed (even with SIGKILL) at any moment. It is not flushed to disk, so a
/// crash of the machine itself may forget the last records; that means a redelivered
/// duplicate is handled again, never that a message is lost.
/// [`prune`](Inbox::prune) writes the live entries to `inbox.log.tmp`, flushes it, renames it
/// over the log atomically and goes on appending to the new file.
///
/// One host process may use a data directory at a time: opening takes an advisory lock on
/// `<data_dir>/inbox.lock` (released when the inbox is dropped or the process dies) and fails,
/// naming the directory, if another process holds it.
pub struct FileInbox {
    inner: Arc<FileInner>,
}

struct FileInner {
    dir: PathBuf,
    log_path: PathBuf,
    retention_ms: u64,
    /// (endpoint, message id) → when it was handled, in ms since the epoch.
    entries: Mutex<HashMap<(String, String), u64>>,
    /// Taken before `entries` when both are needed; held by `prune` while it rewrites the log,
    /// so no record is appended to the file being replaced.
    log: Mutex<LogFile>,
    /// Holds the advisory lock on `inbox.lock` for as long as the inbox lives.
    _lock: File,
}

struct LogFile {
    file: File,
    /// Lines in the current file, including stale, duplicate and unreadable ones.
    lines: u64,
    /// Expired entries dropped while loading, reported by the next prune.
    expired_at_open: u64,
}

impl fmt::Debug for FileInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileInbox")
            .field("log", &self.inner.log_path)
            .field("retention_ms", &self.inner.retention_ms)
            .field("entries", &lock(&self.inner.entries).len())
            .finish()
    }
}

impl FileInbox {
    /// Opens (creating if needed) the log in `data_dir`, remembering ids for `retention`.
    pub async fn open(data_dir: &Path, retention: Duration) -> Result<Self> {
        let dir = data_dir.to_owned();
        let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        let inner = tokio::task::spawn_blocking(move || FileInner::open(dir, retention_ms))
            .await
            .context("the inbox's opening task failed")??;
        Ok(FileInbox {
            inner: Arc::new(inner),
        })
    }

    /// Records `endpoint` handling `message_id` at `handled_at_ms` (ms since the epoch).
    ///
    /// The line is written on the calling thread: one append of about a hundred bytes to the
    /// page cache (the log is not flushed to disk per record), which costs a few µs. Handing
    /// every record to the blocking pool cost two thread wake-ups per handled message, more
    /// than the write itself (docs/performance.md). Only if the log is held (by a prune,
    /// which may take a while, or by another record) does the record wait for it on the
    /// blocking pool, so an async worker never waits for a prune.
    async fn record_at(&self, endpoint: &str, message_id: &str, handled_at_ms: u64) -> Result<()> {
        let key = (endpoint.to_owned(), message_id.to_owned());
        let key = match self.inner.log.try_lock() {
            Ok(log) => return self.inner.append(log, key, handled_at_ms),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                return self.inner.append(poisoned.into_inner(), key, handled_at_ms);
            }
            // A prune, or another record, holds the log.
            Err(std::sync::TryLockError::WouldBlock) => key,
        };
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.record_at(key, handled_at_ms))
            .await
            .context("the inbox's writing task failed")?
    }
}

impl FileInner {
    fn open(dir: PathBuf, retention_ms: u64) -> Result<Self> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the inbox directory {}", dir.display()))?;
        let lock = take_dir_lock(&dir)?;
        let log_path = dir.join("inbox.log");
        let tmp_path = dir.join("inbox.log.tmp");
        // A leftover from a prune that was interrupted before its rename: the log is intact.
        match std::fs::remove_file(&tmp_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove {}", tmp_path.display()));
            }
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)
            .with_context(|| format!("cannot open the inbox log {}", log_path.display()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("cannot read the inbox log {}", log_path.display()))?;

        // A last line without its newline was torn by a crash mid-write: cut it off, or the
        // next append would be glued to it and lost too.
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            tracing::warn!(
                log = %log_path.display(),
                bytes = bytes.len() - complete,
                "the inbox log ends with a torn line (the process was killed mid-write); it is skipped"
            );
            file.set_len(complete as u64)
                .with_context(|| format!("cannot cut the torn line off {}", log_path.display()))?;
        }

        let now = now_ms();
        let mut entries = HashMap::new();
        let (mut lines, mut expired, mut unreadable) = (0_u64, 0_u64, 0_u64);
        for (index, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            lines += 1;
            let parsed: LogLine<'_> = match serde_json::from_slice(line) {
                Ok(parsed) => parsed,
                Err(e) => {
                    unreadable += 1;
                    if unreadable <= 5 {
                        tracing::warn!(
                            log = %log_path.display(),
                            line = index + 1,
                            error = %e,
                            "skipping an unreadable line of the inbox log"
                        );
                    }
                    continue;
                }
            };
            if now.saturating_sub(parsed.handled_at_ms) >= retention_ms {
                expired += 1;
                continue;
            }
            let key = (parsed.endpoint.into_owned(), parsed.message_id.into_owned());
            let at = entries.entry(key).or_insert(parsed.handled_at_ms);
            *at = (*at).max(parsed.handled_at_ms);
        }
        if unreadable > 5 {
            tracing::warn!(
                log = %log_path.display(),
                unreadable,
                "skipped unreadable lines of the inbox log"
            );
        }
        tracing::debug!(log = %log_path.display(), live = entries.len(), expired, "inbox loaded");
        Ok(FileInner {
            dir,
            log_path,
            retention_ms,
            entries: Mutex::new(entries),
            log: Mutex::new(LogFile {
                file,
                lines,
                expired_at_open: expired,
            }),
            _lock: lock,
        })
    }

    fn is_live(&self, handled_at_ms: u64, now: u64) -> bool {
        now.saturating_sub(handled_at_ms) < self.retention_ms
    }

    fn seen(&self, endpoint: &str, message_id: &str) -> bool {
        let key = (endpoint.to_owned(), message_id.to_owned());
        let at = lock(&self.entries).get(&key).copied();
        at.is_some_and(|at| self.is_live(at, now_ms()))
    }

    fn record_at(&self, key: (String, String), handled_at_ms: u64) -> Result<()> {
        self.append(lock(&self.log), key, handled_at_ms)
    }

    fn append(
        &self,
        mut log: MutexGuard<'_, LogFile>,
        key: (String, String),
        handled_at_ms: u64,
    ) -> Result<()> {
        let already = lock(&self.entries).get(&key).copied();
        if already.is_some_and(|at| at >= handled_at_ms || self.is_live(at, now_ms())) {
            return Ok(()); // Recorded already and still remembered.
        }
        let line = LogLine {
            endpoint: Cow::Borrowed(&key.0),
            message_id: Cow::Borrowed(&key.1),
            handled_at_ms,
        };
        let mut buf = serde_json::to_vec(&line).context("cannot encode an inbox record")?;
        buf.push(b'\n');
        // The whole line in one write (the file is opened for appending), so a kill leaves
        // either the line or, at worst, a torn tail that the next open cuts off.
        log.file.write_all(&buf).with_context(|| {
            format!(
                "cannot append to the inbox log {} (endpoint {}, message {})",
                self.log_path.display(),
                key.0,
                key.1
            )
        })?;
        log.lines += 1;
        lock(&self.entries).insert(key, handled_at_ms);
        Ok(())
    }

    fn prune(&self) -> Result<u64> {
        let mut log = lock(&self.log);
        let now = now_ms();
        let (forgotten, live) = {
            let mut entries = lock(&self.entries);
            let before = entries.len();
            entries.retain(|_, at| self.is_live(*at, now));
            let forgotten = (before - entries.len()) as u64;
            let live: Vec<_> = entries
                .iter()
                .map(|((endpoint, message_id), at)| (endpoint.clone(), message_id.clone(), *at))
                .collect();
            (forgotten, live)
        };
        let forgotten = forgotten + std::mem::take(&mut log.expired_at_open);
        if log.lines == live.len() as u64 {
            return Ok(forgotten); // The file holds exactly the live entries.
        }

        let tmp_path = self.dir.join("inbox.log.tmp");
        let mut buf = Vec::with_capacity(live.len() * 96);
        for (endpoint, message_id, at) in &live {
            let line = LogLine {
                endpoint: Cow::Borrowed(endpoint),
                message_id: Cow::Borrowed(message_id),
                handled_at_ms: *at,
            };
            serde_json::to_writer(&mut buf, &line).context("cannot encode an inbox record")?;
            buf.push(b'\n');
        }
        let mut tmp = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)
            .with_context(|| format!("cannot create {}", tmp_path.display()))?;
        tmp.write_all(&buf)
            .and_then(|()| tmp.sync_all())
            .with_context(|| format!("cannot write {}", tmp_path.display()))?;
        std::fs::rename(&tmp_path, &self.log_path).with_context(|| {
            format!(
                "cannot replace {} with {}",
                self.log_path.display(),
                tmp_path.display()
            )
        })?;
        // Make the rename itself durable; the old log is complete either way.
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot flush the inbox directory");
        }
        // The handle of the new file is positioned at its end: appends continue there.
        log.file = tmp;
        log.lines = live.len() as u64;
        Ok(forgotten)
    }
}

/// Takes the advisory lock `<dir>/inbox.lock`, failing if another process holds it.
fn take_dir_lock(dir: &Path) -> Result<File> {
    let path = dir.join("inbox.lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the inbox lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            };
            bail!(
                "the inbox data directory {} is in use by another Courier process{holder}: only \
                 one host may use a data directory (lock file {})",
                dir.display(),
                path.display()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    // Who holds it, for the error another process will show; the lock itself is what counts.
    let pid = std::process::id().to_string();
    if let Err(e) = file
        .set_len(0)
        .and_then(|()| file.write_all(pid.as_bytes()))
    {
        tracing::debug!(lock = %path.display(), error = %e, "cannot write the pid into the lock file");
    }
    Ok(file)
}

#[async_trait]
impl Inbox for FileInbox {
    async fn seen(&self, endpoint: &str, message_id: &str) -> Result<bool> {
        Ok(self.inner.seen(endpoint, message_id))
    }

    async fn record(&self, endpoint: &str, message_id: &str) -> Result<()> {
        self.record_at(endpoint, message_id, now_ms()).await
    }

    async fn prune(&self) -> Result<u64> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.prune())
            .await
            .context("the inbox's pruning task failed")?
    }

    fn describe(&self) -> String {
        format!("file {}", self.inner.log_path.display())
    }
}

// ---------------------------------------------------------------------------------------------
// postgres
// ---------------------------------------------------------------------------------------------

/// Replaces the password of a PostgreSQL URL, in the user info or a `password=` parameter.
fn redact_postgres_url(url: &str) -> String {
    let redacted = redact_url(url);
    let Some((base, query)) = redacted.split_once('?') else {
        return redacted;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some(("password", _)) => "password=***".to_owned(),
            _ => param.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// A parsed PostgreSQL URL, with what must never appear in an error or a log.
#[derive(Clone)]
struct PgTarget {
    config: tokio_postgres::Config,
    /// The URL with the password replaced.
    shown: String,
    /// Every spelling of the password found in the URL.
    secrets: Vec<String>,
}

impl PgTarget {
    fn parse(url: &str) -> Result<Self> {
        let shown = redact_postgres_url(url);
        let mut secrets = url_passwords(url);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("inbox.postgres_url = {shown:?} must be a postgres:// URL");
        }
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            anyhow!(
                "inbox.postgres_url = {shown:?} is not a valid PostgreSQL URL: {}",
                scrub(&error_chain(&e), &secrets)
            )
        })?;
        if let Some(password) = config.get_password() {
            secrets.push(String::from_utf8_lossy(password).into_owned());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("courier");
        }
        Ok(PgTarget {
            config,
            shown,
            secrets,
        })
    }

    /// An error from PostgreSQL, as text with any password removed.
    fn error(&self, e: &tokio_postgres::Error) -> anyhow::Error {
        anyhow!("{}", scrub(&error_chain(e), &self.secrets))
    }
}

/// The raw passwords of a URL: its user info's and any `password=` parameter's.
fn url_passwords(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
    {
        found.push(password.to_owned());
    }
    if let Some((_, query)) = url.split_once('?') {
        for param in query.split('&') {
            if let Some(("password", value)) = param.split_once('=') {
                found.push(value.to_owned());
            }
        }
    }
    found
}

/// `text` with every secret replaced by `***`.
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret.as_str(), "***");
    }
    text
}

/// An error and its sources, joined with ": ".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The PostgreSQL store: one table shared by every host.
///
/// The table (created if missing) is `(endpoint text, message_id text, handled_at timestamptz,
/// primary key (endpoint, message_id))` with an index on `handled_at`. Queries are prepared
/// once per connection and run concurrently on it (tokio-postgres pipelines them). When the
/// connection drops, the next call reconnects and runs its query once more; every query is
/// idempotent. Errors and [`describe`](Inbox::describe) never show the password.
pub struct PostgresInbox {
    target: PgTarget,
    table: String,
    retention_ms: u64,
    session: tokio::sync::Mutex<Option<Arc<PgSession>>>,
}

/// One connection and its prepared statements.
struct PgSession {
    client: Client,
    seen: Statement,
    record: Statement,
    prune: Statement,
}

impl fmt::Debug for PostgresInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresInbox")
            .field("url", &self.target.shown)
            .field("table", &self.table)
            .field("retention_ms", &self.retention_ms)
            .finish_non_exhaustive()
    }
}

impl PostgresInbox {
    /// Connects to `url`, creates `table` if it is missing, and prepares the queries.
    pub async fn open(url: &str, table: &str, retention: Duration) -> Result<Self> {
        if !is_plain_identifier(table) {
            bail!("inbox.table = {table:?} is not a plain identifier");
        }
        let inbox = PostgresInbox {
            target: PgTarget::parse(url)?,
            table: table.to_owned(),
            retention_ms: u64::try_from(retention.as_millis()).unwrap_or(u64::MAX),
            session: tokio::sync::Mutex::new(None),
        };
        inbox.session().await?;
        Ok(inbox)
    }

    /// The current connection, opening one if there is none or it closed.
    async fn session(&self) -> Result<Arc<PgSession>> {
        let mut slot = self.session.lock().await;
        if let Some(session) = slot.as_ref()
            && !session.client.is_closed()
        {
            return Ok(Arc::clone(session));
        }
        *slot = None;
        let session = Arc::new(self.connect().await?);
        *slot = Some(Arc::clone(&session));
        Ok(session)
    }

    async fn connect(&self) -> Result<PgSession> {
        let context = || {
            format!(
                "inbox: cannot open table {} at PostgreSQL {}",
                self.table, self.target.shown
            )
        };
        let (client, connection) = self
            .target
            .config
            .connect(NoTls)
            .await
            .map_err(|e| self.target.error(&e))
            .with_context(context)?;
        let shown = self.target.shown.clone();
        let secrets = self.target.secrets.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(
                    url = %shown,
                    error = %scrub(&error_chain(&e), &secrets),
                    "inbox: the PostgreSQL connection closed"
                );
            }
        });

        let table = &self.table;
        let create = format!(
            "create table if not exists \"{table}\" (\
                 endpoint text not null, \
                 message_id text not null, \
                 handled_at timestamptz not null default now(), \
                 primary key (endpoint, message_id)); \
             create index if not exists \"{table}_handled_at\" on \"{table}\" (handled_at);"
        );
        if let Err(e) = client.batch_execute(&create).await {
            // Two hosts creating the table at once: the loser finds it made.
            if e.code() != Some(&SqlState::UNIQUE_VIOLATION) {
                return Err(self.target.error(&e)).with_context(context);
            }
        }
        let window = format!("interval '{} milliseconds'", self.retention_ms);
        let client_ref = &client;
        let prepare = |sql: String| async move {
            client_ref
                .prepare(&sql)
                .await
                .map_err(|e| self.target.error(&e))
                .with_context(context)
        };
        let seen = prepare(format!(
            "select exists (select 1 from \"{table}\" \
             where endpoint = $1 and message_id = $2 and handled_at > now() - {window})"
        ))
        .await?;
        // An entry still remembered is kept as it is; an expired one not yet pruned restarts.
        let record = prepare(format!(
            "insert into \"{table}\" as t (endpoint, message_id) values ($1, $2) \
             on conflict (endpoint, message_id) do update set handled_at = now() \
             where t.handled_at <= now() - {window}"
        ))
        .await?;
        let prune = prepare(format!(
            "delete from \"{table}\" where handled_at <= now() - {window}"
        ))
        .await?;
        Ok(PgSession {
            client,
            seen,
            record,
            prune,
        })
    }

    /// Runs `op` on the current connection; if the connection turns out to be gone, reconnects
    /// and runs it once more.
    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn(Arc<PgSession>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let context = || format!("inbox: cannot {what} in table {}", self.table);
        let session = self.session().await.with_context(context)?;
        match op(Arc::clone(&session)).await {
            Ok(value) => Ok(value),
            Err(e) if connection_lost(&e, &session.client) => {
                tracing::info!(
                    url = %self.target.shown,
                    error = %scrub(&error_chain(&e), &self.target.secrets),
                    "inbox: the PostgreSQL connection was lost; reconnecting"
                );
                {
                    let mut slot = self.session.lock().await;
                    if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &session)) {
                        *slot = None;
                    }
                }
                let session = self.session().await.with_context(context)?;
                op(session)
                    .await
                    .map_err(|e| self.target.error(&e))
                    .with_context(context)
            }
            Err(e) => Err(self.target.error(&e)).with_context(context),
        }
    }

    /// The server process of the current connection, so a test can terminate it.
    #[cfg(test)]
    async fn backend_pid(&self) -> Result<i32> {
        let session = self.session().await?;
        let row = session
            .client
            .query_one("select pg_backend_pid()", &[])
            .await?;
        Ok(row.get(0))
    }
}

/// Whether `e` means the connection is gone (rather than the query being wrong).
fn connection_lost(e: &tokio_postgres::Error, client: &Client) -> bool {
    if e.is_closed() || client.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        // Class 08: connection exception; class 57: operator intervention (shutdown,
        // terminated backend).
        let code = code.code();
        return code.starts_with("08") || code.starts_with("57");
    }
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

#[async_trait]
impl Inbox for PostgresInbox {
    async fn seen(&self, endpoint: &str, message_id: &str) -> Result<bool> {
        self.run("look up a message", |s| async move {
            let row = s
                .client
                .query_one(&s.seen, &[&endpoint, &message_id])
                .await?;
            row.try_get::<_, bool>(0)
        })
        .await
        .with_context(|| format!("endpoint {endpoint}, message {message_id}"))
    }

    async fn record(&self, endpoint: &str, message_id: &str) -> Result<()> {
        self.run("record a message", |s| async move {
            s.client.execute(&s.record, &[&endpoint, &message_id]).await
        })
        .await
        .with_context(|| format!("endpoint {endpoint}, message {message_id}"))?;
        Ok(())
    }

    async fn prune(&self) -> Result<u64> {
        self.run(
            "prune",
            |s| async move { s.client.execute(&s.prune, &[]).await },
        )
        .await
    }

    fn describe(&self) -> String {
        format!("postgres table {} at {}", self.table, self.target.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
    const HOUR: Duration = Duration::from_secs(3600);

    async fn file_inbox(dir: &Path) -> FileInbox {
        FileInbox::open(dir, HOUR).await.unwrap()
    }

    fn log_lines(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("inbox.log"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn file_record_then_seen_is_keyed_by_endpoint_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = file_inbox(dir.path()).await;
        assert!(!inbox.seen("payment", "m-1").await.unwrap(), "unknown id");
        inbox.record("payment", "m-1").await.unwrap();
        inbox.record("payment", "m-1").await.unwrap(); // twice is not an error
        assert!(inbox.seen("payment", "m-1").await.unwrap());
        assert!(!inbox.seen("payment", "m-2").await.unwrap(), "unknown id");
        assert!(
            !inbox.seen("shipping", "m-1").await.unwrap(),
            "same id, other endpoint"
        );
        assert_eq!(
            log_lines(dir.path()).len(),
            1,
            "a live entry is written once"
        );
        assert_eq!(
            inbox.describe(),
            format!("file {}", dir.path().join("inbox.log").display())
        );
    }

    #[tokio::test]
    async fn file_entries_survive_reopening_even_with_odd_ids() {
        let dir = tempfile::tempdir().unwrap();
        let odd = "a b\tc\nd \"e\" \\ é";
        {
            let inbox = file_inbox(dir.path()).await;
            inbox.record("payment", "m-1").await.unwrap();
            inbox.record("pay ment", odd).await.unwrap();
        }
        let inbox = file_inbox(dir.path()).await;
        assert!(inbox.seen("payment", "m-1").await.unwrap());
        assert!(inbox.seen("pay ment", odd).await.unwrap());
        assert!(!inbox.seen("pay", "ment a b").await.unwrap());
        assert!(!inbox.seen("payment", "m-2").await.unwrap());
    }

    #[tokio::test]
    async fn file_skips_a_torn_last_line_and_unreadable_lines() {
        let dir = tempfile::tempdir().unwrap();
        {
            let inbox = file_inbox(dir.path()).await;
            inbox.record("payment", "m-1").await.unwrap();
            inbox.record("payment", "m-2").await.unwrap();
        }
        // Garbage in the middle, then a line torn by a kill mid-write.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join("inbox.log"))
            .unwrap();
        file.write_all(b"not json at all\n{\"endpoint\":\"payment\",\"mess")
            .unwrap();
        drop(file);

        let inbox = file_inbox(dir.path()).await;
        assert!(inbox.seen("payment", "m-1").await.unwrap());
        assert!(inbox.seen("payment", "m-2").await.unwrap());
        // The torn tail was cut off, so a new record starts a line of its own.
        inbox.record("payment", "m-3").await.unwrap();
        drop(inbox);
        let inbox = file_inbox(dir.path()).await;
        for id in ["m-1", "m-2", "m-3"] {
            assert!(inbox.seen("payment", id).await.unwrap(), "{id}");
        }
        assert_eq!(log_lines(dir.path()).len(), 4, "m-1, m-2, garbage, m-3");
    }

    #[tokio::test]
    async fn file_prune_forgets_old_entries_and_keeps_appending() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = file_inbox(dir.path()).await;
        let two_hours_ago = now_ms() - 2 * 3_600_000;
        inbox
            .record_at("payment", "old", two_hours_ago)
            .await
            .unwrap();
        inbox.record("payment", "new").await.unwrap();
        assert!(
            !inbox.seen("payment", "old").await.unwrap(),
            "past the retention, even before a prune"
        );
        assert_eq!(inbox.prune().await.unwrap(), 1);
        assert_eq!(inbox.prune().await.unwrap(), 0);
        assert_eq!(log_lines(dir.path()).len(), 1);
        assert!(!dir.path().join("inbox.log.tmp").exists());

        inbox.record("payment", "after").await.unwrap();
        assert_eq!(log_lines(dir.path()).len(), 2, "appends go to the new file");
        drop(inbox);
        let inbox = file_inbox(dir.path()).await;
        assert!(inbox.seen("payment", "new").await.unwrap());
        assert!(inbox.seen("payment", "after").await.unwrap());
        assert!(!inbox.seen("payment", "old").await.unwrap());
    }

    #[tokio::test]
    async fn file_records_wait_off_the_async_worker_while_a_prune_holds_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = file_inbox(dir.path()).await;
        // A prune in progress on another thread, as `prune` runs on the blocking pool: the
        // log held until the test lets go (or five seconds pass).
        let (locked_tx, locked) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let inner = Arc::clone(&inbox.inner);
        let pruner = std::thread::spawn(move || {
            let log = lock(&inner.log);
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(5));
            drop(log);
        });
        locked.recv().unwrap();

        let mut recording = Box::pin(inbox.record("payment", "during"));
        // Written on this (the only async) thread, the record would wait for the lock here
        // and come back done after the pruner's five seconds.
        assert!(
            futures_lite::future::poll_once(&mut recording)
                .await
                .is_none(),
            "the record waits on the blocking pool, not on the async worker"
        );
        release.send(()).unwrap();
        recording.await.unwrap();
        pruner.join().unwrap();
        assert!(inbox.seen("payment", "during").await.unwrap());
        inbox.record("payment", "after").await.unwrap();
        assert_eq!(log_lines(dir.path()).len(), 2);
    }

    #[tokio::test]
    async fn file_entries_expired_at_open_are_pruned_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let inbox = file_inbox(dir.path()).await;
            inbox
                .record_at("payment", "old", now_ms() - 2 * 3_600_000)
                .await
                .unwrap();
            inbox.record("payment", "new").await.unwrap();
        }
        let inbox = file_inbox(dir.path()).await;
        assert!(!inbox.seen("payment", "old").await.unwrap());
        assert_eq!(inbox.prune().await.unwrap(), 1);
        assert_eq!(log_lines(dir.path()).len(), 1);
        assert!(inbox.seen("payment", "new").await.unwrap());
    }

    #[tokio::test]
    async fn file_lock_refuses_a_second_opener_of_the_same_dir() {
        let dir = tempfile::tempdir().unwrap();
        let first = file_inbox(dir.path()).await;
        let err = FileInbox::open(dir.path(), HOUR).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains("another Courier process"), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        file_inbox(dir.path()).await; // released with the first inbox
    }

    #[tokio::test]
    async fn open_follows_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = InboxConfig {
            data_dir: dir.path().join("nested/data"),
            ..InboxConfig::default()
        };
        let inbox = open(&config).await.unwrap();
        inbox.record("payment", "m-1").await.unwrap();
        assert!(inbox.seen("payment", "m-1").await.unwrap());
        assert!(inbox.describe().starts_with("file "));

        let off = open(&InboxConfig {
            store: InboxStore::Off,
            ..InboxConfig::default()
        })
        .await
        .unwrap();
        off.record("payment", "m-1").await.unwrap();
        assert!(!off.seen("payment", "m-1").await.unwrap());
        assert_eq!(off.prune().await.unwrap(), 0);
    }

    #[test]
    fn config_parses_from_toml_with_defaults() {
        let config: InboxConfig = toml::from_str("").unwrap();
        assert_eq!(config, InboxConfig::default());
        config.validate().unwrap();
        let config: InboxConfig = toml::from_str(
            "store = \"postgres\"\npostgres_url = \"postgres://u@db/x\"\nretention_hours = 24\ntable = \"inbox_2\"",
        )
        .unwrap();
        assert_eq!(config.store, InboxStore::Postgres);
        assert_eq!(config.retention(), Duration::from_secs(24 * 3600));
        config.validate().unwrap();
        let err = toml::from_str::<InboxConfig>("retention = 3").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `retention`"),
            "{err}"
        );
        let err = toml::from_str::<InboxConfig>("store = \"redis\"").unwrap_err();
        assert!(err.to_string().contains("unknown variant `redis`"), "{err}");
    }

    /// Each bad config beside the text its error must contain.
    #[test]
    fn bad_configs_fail_naming_the_key() {
        let postgres = |url: Option<&str>| InboxConfig {
            store: InboxStore::Postgres,
            postgres_url: url.map(str::to_owned),
            ..InboxConfig::default()
        };
        let cases = [
            (
                InboxConfig {
                    retention_hours: 0,
                    ..InboxConfig::default()
                },
                "inbox.retention_hours must be at least 1",
            ),
            (
                InboxConfig {
                    retention_hours: 1_000_000,
                    ..InboxConfig::default()
                },
                "inbox.retention_hours = 1000000 is too large",
            ),
            (postgres(None), "inbox.postgres_url must be set"),
            (postgres(Some("")), "inbox.postgres_url must be set"),
            (
                postgres(Some("mysql://u:hunter2@db/x")),
                "inbox.postgres_url = \"mysql://u:***@db/x\" must be a postgres:// URL",
            ),
            (
                postgres(Some("postgres://u:hunter2@db:notaport/x")),
                "inbox.postgres_url = \"postgres://u:***@db:notaport/x\" is not a valid",
            ),
            (
                InboxConfig {
                    postgres_url: Some("postgres://u:hunter2@db/x".to_owned()),
                    ..InboxConfig::default()
                },
                "inbox.postgres_url = \"postgres://u:***@db/x\" is set but inbox.store = \"file\"",
            ),
            (
                InboxConfig {
                    table: "inbox; drop table x".to_owned(),
                    ..postgres(Some(PG_URL))
                },
                "inbox.table = \"inbox; drop table x\" is not a plain identifier",
            ),
            (
                InboxConfig {
                    table: "Inbox".to_owned(),
                    ..InboxConfig::default()
                },
                "inbox.table",
            ),
            (
                InboxConfig {
                    table: "a".repeat(53),
                    ..InboxConfig::default()
                },
                "inbox.table",
            ),
            (
                InboxConfig {
                    data_dir: PathBuf::new(),
                    ..InboxConfig::default()
                },
                "inbox.data_dir must not be empty",
            ),
        ];
        for (config, expected) in cases {
            let err = format!("{:#}", config.validate().unwrap_err());
            assert!(err.contains(expected), "{config:?}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        // Off ignores a leftover URL.
        InboxConfig {
            store: InboxStore::Off,
            postgres_url: Some("postgres://u@db/x".to_owned()),
            ..InboxConfig::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn postgres_urls_are_redacted() {
        assert_eq!(
            redact_postgres_url("postgres://u:pw@h:5432/db?sslmode=disable&password=pw2"),
            "postgres://u:***@h:5432/db?sslmode=disable&password=***"
        );
        assert_eq!(
            url_passwords("postgres://u:p%40ss@h/db?password=x"),
            vec!["p%40ss".to_owned(), "x".to_owned()]
        );
    }

    /// A table of its own for one test; dropped by [`drop_table`].
    fn table_name() -> String {
        format!("courier_inbox_test_{}", uuid::Uuid::now_v7().simple())
    }

    async fn admin() -> Client {
        let (client, connection) = tokio_postgres::connect(PG_URL, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    async fn drop_table(table: &str) {
        admin()
            .await
            .batch_execute(&format!("drop table if exists \"{table}\""))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn postgres_record_seen_and_prune() {
        let table = table_name();
        let inbox = PostgresInbox::open(PG_URL, &table, HOUR).await.unwrap();
        assert!(!inbox.seen("payment", "m-1").await.unwrap(), "unknown id");
        inbox.record("payment", "m-1").await.unwrap();
        inbox.record("payment", "m-1").await.unwrap(); // twice is not an error
        inbox.record("payment", "old").await.unwrap();
        assert!(inbox.seen("payment", "m-1").await.unwrap());
        assert!(!inbox.seen("payment", "m-2").await.unwrap(), "unknown id");
        assert!(
            !inbox.seen("shipping", "m-1").await.unwrap(),
            "same id, other endpoint"
        );
        let odd = "a b\tc\nd'e\"";
        inbox.record("pay ment", odd).await.unwrap();
        assert!(inbox.seen("pay ment", odd).await.unwrap());

        // Age one entry past the retention, as if it had been handled two hours ago.
        admin()
            .await
            .execute(
                &format!(
                    "update \"{table}\" set handled_at = now() - interval '2 hours' \
                     where message_id = 'old'"
                ),
                &[],
            )
            .await
            .unwrap();
        assert!(!inbox.seen("payment", "old").await.unwrap(), "expired");
        assert_eq!(inbox.prune().await.unwrap(), 1);
        assert_eq!(inbox.prune().await.unwrap(), 0);
        assert!(inbox.seen("payment", "m-1").await.unwrap());

        // A second inbox on the same table (another host) sees the same entries.
        let other = PostgresInbox::open(PG_URL, &table, HOUR).await.unwrap();
        assert!(other.seen("payment", "m-1").await.unwrap());
        assert_eq!(
            other.describe(),
            format!("postgres table {table} at {PG_URL}")
        );
        drop_table(&table).await;
    }

    #[tokio::test]
    async fn postgres_reconnects_after_the_connection_drops() {
        let table = table_name();
        let inbox = PostgresInbox::open(PG_URL, &table, HOUR).await.unwrap();
        inbox.record("payment", "m-1").await.unwrap();
        for _ in 0..2 {
            let pid = inbox.backend_pid().await.unwrap();
            let killed: bool = admin()
                .await
                .query_one("select pg_terminate_backend($1)", &[&pid])
                .await
                .unwrap()
                .get(0);
            assert!(killed);
            assert!(inbox.seen("payment", "m-1").await.unwrap());
            inbox.record("payment", "m-2").await.unwrap();
            assert_ne!(inbox.backend_pid().await.unwrap(), pid, "a new connection");
        }
        assert!(inbox.seen("payment", "m-2").await.unwrap());
        drop_table(&table).await;
    }

    #[tokio::test]
    async fn postgres_errors_and_descriptions_never_show_the_password() {
        // Nothing listens on port 1: the connection is refused.
        let url = "postgres://postgres:s3cr3t-pw@127.0.0.1:1/test?password=other-s3cr3t";
        let err = PostgresInbox::open(url, "courier_inbox", HOUR)
            .await
            .unwrap_err();
        let text = format!("{err:#} {err:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("127.0.0.1:1"), "{text}");

        // Trust authentication ignores the password, so this one connects.
        let table = table_name();
        let url = "postgres://postgres:s3cr3t-pw@127.0.0.1:5432/test";
        let inbox = PostgresInbox::open(url, &table, HOUR).await.unwrap();
        let shown = format!("{} {inbox:?}", inbox.describe());
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("postgres://postgres:***@127.0.0.1:5432/test"),
            "{shown}"
        );
        drop_table(&table).await;
    }

    #[tokio::test]
    async fn open_follows_the_config_for_postgres() {
        let table = table_name();
        let inbox = open(&InboxConfig {
            store: InboxStore::Postgres,
            postgres_url: Some(PG_URL.to_owned()),
            table: table.clone(),
            ..InboxConfig::default()
        })
        .await
        .unwrap();
        inbox.record("payment", "m-1").await.unwrap();
        assert!(inbox.seen("payment", "m-1").await.unwrap());
        assert!(inbox.describe().starts_with("postgres table "));
        drop_table(&table).await;
    }
}
