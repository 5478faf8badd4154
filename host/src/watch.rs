//! The watcher of the plugins directory, for hot reload.
//!
//! [`DirWatcher::start`] watches one directory (not its subdirectories) and reports, as a
//! [`Change`], each plugin that is ready to be (re)loaded and each one that went away. Only
//! `*.wasm` files count, with their sidecars `<stem>.toml`; hidden files and anything else
//! (`foo.wasm.tmp`, `foo.wasm.part`, `foo.wasm~`, `#foo#`) are ignored, so a plugin written
//! under a temporary name is seen when it is renamed into place.
//!
//! A plugin must not be loaded half-written, yet a swap should take effect at once. Two signs
//! tell that a file is complete: it was renamed into place (`mv`, `rsync`, an editor's atomic
//! save), or the process that wrote it closed it (`cp`, `install`, `std::fs::write`). Either is
//! reported as soon as it arrives. A file written without either sign (its writer keeps it open)
//! is reported once it has been quiet for `settle`.
//!
//! What inotify emits on Linux, as `notify` 8 reports it (observed, not assumed):
//! - `cp`, `std::fs::write`: `Create` (for a new file), `Open`, `Modify(Data)` per write,
//!   `Close(Write)`. `cp -p`, `install` and a `mv` from another file system add
//!   `Modify(Metadata)` before the close; `install` adds one more after it.
//! - `mv` within the file system: `Modify(Name(To))` for the new name and no `Create`; when the
//!   old name is in the directory too, `Name(From)` before it and `Name(Both)` after it, all
//!   three with the same tracker (the rename cookie).
//! - `mv` out of the directory: `Name(From)`. `rm`: `Remove`. `touch`: `Open`,
//!   `Modify(Metadata)`, `Close(Write)`. `chmod`: `Modify(Metadata)`.
//! - A file written in chunks: one `Modify(Data)` per chunk, `Close(Write)` only when closed.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use courier_host::watch::{Change, DirWatcher};
//!
//! let (_watcher, mut changes) = DirWatcher::start("plugins".as_ref(), Duration::from_millis(300))?;
//! while let Some(change) = changes.recv().await {
//!     match change {
//!         Change::Updated(wasm) => { /* compile `wasm` and swap it in */ }
//!         Change::Removed(wasm) => { /* retire the plugin loaded from `wasm` */ }
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Raw events waiting for the sorting task. When it is full, notify's thread waits and the
/// kernel queues; should the kernel's queue overflow, the directory is scanned again.
const RAW_EVENT_QUEUE: usize = 256;
/// Changes waiting for the caller.
const CHANGE_QUEUE: usize = 64;

/// What changed in the plugins directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A plugin file (`*.wasm`) or its sidecar (`*.toml` with the same stem) is complete and should be (re)loaded; the path is always the `.wasm` file.
    Updated(PathBuf),
    /// A plugin file was removed (or renamed away).
    Removed(PathBuf),
}

/// Watches the plugins directory; dropping it stops watching and ends the stream of changes.
pub struct DirWatcher {
    dir: PathBuf,
    /// Dropping it stops notify's thread, which drops the sender of raw events, which ends
    /// the sorting task.
    _watcher: RecommendedWatcher,
}

impl fmt::Debug for DirWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirWatcher")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl DirWatcher {
    /// Starts watching `dir` (non-recursive). Changes arrive on the returned receiver.
    ///
    /// Reported paths are `dir` joined with the file name. A file written in place is reported
    /// once it has been quiet for `settle` or closed, whichever comes first. Must be called
    /// within a tokio runtime, where the task that times the changes runs; the task ends when
    /// the watcher or the receiver is dropped.
    pub fn start(dir: &Path, settle: Duration) -> Result<(DirWatcher, mpsc::Receiver<Change>)> {
        let runtime = tokio::runtime::Handle::try_current().with_context(|| {
            format!(
                "cannot watch the plugins directory {}: not within a tokio runtime",
                dir.display()
            )
        })?;
        let metadata = std::fs::metadata(dir)
            .with_context(|| format!("cannot watch the plugins directory {}", dir.display()))?;
        if !metadata.is_dir() {
            bail!(
                "cannot watch the plugins directory {}: it is not a directory",
                dir.display()
            );
        }
        let present = list_plugins(dir)
            .with_context(|| format!("cannot list the plugins directory {}", dir.display()))?;

        let (raw_tx, raw_rx) = mpsc::channel(RAW_EVENT_QUEUE);
        let logged_dir = dir.to_owned();
        // Runs on notify's own thread, outside the runtime, so it may block on a full queue.
        let handler = move |event: notify::Result<Event>| match event {
            Ok(event) => {
                // An error means the sorting task has ended (the caller dropped the
                // receiver): there is no one left to tell.
                let _ = raw_tx.blocking_send(event);
            }
            Err(error) => tracing::warn!(
                dir = %logged_dir.display(),
                %error,
                "error while watching the plugins directory; watching goes on"
            ),
        };
        let mut watcher = notify::recommended_watcher(handler).with_context(|| {
            format!(
                "cannot create a watcher for the plugins directory {}",
                dir.display()
            )
        })?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch the plugins directory {}", dir.display()))?;

        let (changes_tx, changes_rx) = mpsc::channel(CHANGE_QUEUE);
        let sorter = ChangeSorter {
            dir: dir.to_owned(),
            settle,
            changes: changes_tx,
            pending: HashMap::new(),
            reported: HashMap::new(),
            last_rename_to: None,
            present,
        };
        runtime.spawn(sorter.run(raw_rx));
        tracing::debug!(dir = %dir.display(), ?settle, "watching the plugins directory");
        Ok((
            DirWatcher {
                dir: dir.to_owned(),
                _watcher: watcher,
            },
            changes_rx,
        ))
    }
}

/// What a file in the directory is to Courier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `<stem>.wasm`.
    Plugin,
    /// `<stem>.toml`, the settings of `<stem>.wasm`.
    Sidecar,
}

/// The role of `path` by its name, or `None` for a file Courier ignores.
fn role(path: &Path) -> Option<Role> {
    let name = path.file_name()?;
    // Hidden files are other tools' temporaries (rsync's `.foo.wasm.XXXXXX`, editors' swap
    // files), never plugins.
    if name.as_encoded_bytes().starts_with(b".") {
        return None;
    }
    let extension = path.extension()?;
    if extension == "wasm" {
        Some(Role::Plugin)
    } else if extension == "toml" {
        Some(Role::Sidecar)
    } else {
        None
    }
}

/// The plugin file that `path`, in `role`, belongs to.
fn plugin_of(path: &Path, role: Role) -> PathBuf {
    match role {
        Role::Plugin => path.to_owned(),
        Role::Sidecar => path.with_extension("wasm"),
    }
}

/// The plugin files in `dir` now.
fn list_plugins(dir: &Path) -> std::io::Result<HashSet<PathBuf>> {
    let mut plugins = HashSet::new();
    for entry in std::fs::read_dir(dir)? {
        let path = dir.join(entry?.file_name());
        if role(&path) == Some(Role::Plugin) && path.is_file() {
            plugins.insert(path);
        }
    }
    Ok(plugins)
}

async fn is_file(path: &Path) -> bool {
    tokio::fs::metadata(path)
        .await
        .is_ok_and(|metadata| metadata.is_file())
}

/// How a path was last reported, kept until something happens to it again.
#[derive(Debug, Clone, Copy)]
enum Report {
    /// At once, on a close or a rename, at this instant.
    AtOnce(Instant),
    /// After `settle` of quiet.
    AfterSettle,
}

/// How a file showed it is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sign {
    /// Its writer closed it.
    Closed,
    /// It was renamed into place.
    Renamed,
}

/// The caller dropped the receiver of changes.
#[derive(Debug)]
struct Closed;

/// Turns raw events into [`Change`]s, timing the files written in place.
struct ChangeSorter {
    dir: PathBuf,
    settle: Duration,
    changes: mpsc::Sender<Change>,
    /// Paths written in place and not yet closed: when each is due to be reported.
    pending: HashMap<PathBuf, Instant>,
    /// How each path was last reported, until something happens to it again.
    reported: HashMap<PathBuf, Report>,
    /// The tracker and destination of the last `Name(To)`, to recognise the `Name(Both)`
    /// that repeats it.
    last_rename_to: Option<(usize, PathBuf)>,
    /// The plugin files known to exist, to tell which were removed while events were lost.
    present: HashSet<PathBuf>,
}

impl ChangeSorter {
    async fn run(mut self, mut raw: mpsc::Receiver<Event>) {
        // A clone, so waiting for the receiver to go does not hold `self` borrowed.
        let changes = self.changes.clone();
        loop {
            let next_due = self.pending.values().min().copied();
            let due = async {
                match next_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let outcome = tokio::select! {
                event = raw.recv() => match event {
                    Some(event) => self.handle(event).await,
                    // The DirWatcher was dropped.
                    None => break,
                },
                () = due => self.report_due().await,
                () = changes.closed() => break,
            };
            if outcome.is_err() {
                break;
            }
        }
        tracing::debug!(dir = %self.dir.display(), "stopped watching the plugins directory");
    }

    async fn handle(&mut self, event: Event) -> Result<(), Closed> {
        tracing::trace!(?event, "plugins directory event");
        if event.need_rescan() {
            return self.rescan().await;
        }
        if let EventKind::Modify(ModifyKind::Name(RenameMode::To)) = event.kind
            && let (Some(tracker), Some(to)) = (event.tracker(), event.paths.first())
        {
            self.last_rename_to = Some((tracker, to.clone()));
        }
        if let EventKind::Modify(ModifyKind::Name(RenameMode::Both)) = event.kind {
            return self.renamed(&event).await;
        }
        for path in &event.paths {
            if *path == self.dir {
                if matches!(
                    event.kind,
                    EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                ) {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        "the plugins directory was removed or renamed: no more changes will be seen"
                    );
                }
                continue;
            }
            let Some(role) = role(path) else { continue };
            match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                    self.complete(path, role, Sign::Closed).await?;
                }
                EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                    self.complete(path, role, Sign::Renamed).await?;
                }
                EventKind::Create(CreateKind::Folder) | EventKind::Remove(RemoveKind::Folder) => {}
                EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
                    self.removed(path, role).await?;
                }
                // A rename whose direction the platform does not say: the path tells.
                EventKind::Modify(ModifyKind::Name(_)) => {
                    if tokio::fs::symlink_metadata(path).await.is_ok() {
                        self.complete(path, role, Sign::Renamed).await?;
                    } else {
                        self.removed(path, role).await?;
                    }
                }
                // On Linux a file renamed in shows as `Name(To)`, never as `Create`, so a
                // `Create` is a file being written: wait for its close or for quiet.
                EventKind::Create(_)
                | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other) => {
                    self.arm(path, false);
                }
                EventKind::Modify(ModifyKind::Metadata(_)) => self.arm(path, true),
                EventKind::Access(_) | EventKind::Any | EventKind::Other => {}
            }
        }
        Ok(())
    }

    /// `Name(Both)`: the first path was renamed to the second.
    async fn renamed(&mut self, event: &Event) -> Result<(), Closed> {
        let [from, to] = event.paths.as_slice() else {
            return Ok(());
        };
        // inotify sends `Name(From)` and `Name(To)` first, with the same tracker: both halves
        // are reported already.
        if let (Some(tracker), Some((last_tracker, last_to))) =
            (event.tracker(), &self.last_rename_to)
            && tracker == *last_tracker
            && to == last_to
        {
            return Ok(());
        }
        if let Some(role) = role(from) {
            self.removed(from, role).await?;
        }
        if let Some(role) = role(to) {
            self.complete(to, role, Sign::Renamed).await?;
        }
        Ok(())
    }

    /// `path` was written to without a sign that its writer is done: (re)starts its timer.
    fn arm(&mut self, path: &Path, metadata_only: bool) {
        if metadata_only
            && !self.pending.contains_key(path)
            && matches!(self.reported.get(path), Some(Report::AtOnce(at)) if at.elapsed() < self.settle)
        {
            // Attributes set just after the file was closed (`install` sets the mode then):
            // part of the write already reported.
            return;
        }
        self.reported.remove(path);
        self.pending
            .insert(path.to_owned(), Instant::now() + self.settle);
    }

    /// `path` is complete: reports it at once.
    async fn complete(&mut self, path: &Path, role: Role, sign: Sign) -> Result<(), Closed> {
        self.pending.remove(path);
        if sign == Sign::Closed && matches!(self.reported.get(path), Some(Report::AfterSettle)) {
            // Its writer kept it open past `settle`, so it was reported then, and nothing was
            // written since: closing it changes nothing.
            self.reported.remove(path);
            return Ok(());
        }
        if self.send_updated(path, role).await? {
            self.reported
                .insert(path.to_owned(), Report::AtOnce(Instant::now()));
        }
        Ok(())
    }

    /// `path` is gone, removed or renamed away.
    async fn removed(&mut self, path: &Path, role: Role) -> Result<(), Closed> {
        self.pending.remove(path);
        self.reported.remove(path);
        match role {
            Role::Plugin => {
                self.present.remove(path);
                self.send(Change::Removed(path.to_owned())).await
            }
            // The plugin goes back to the settings it has without a sidecar.
            Role::Sidecar => self.send_updated(path, role).await.map(drop),
        }
    }

    /// Reports the paths whose timer ran out.
    async fn report_due(&mut self) -> Result<(), Closed> {
        let now = Instant::now();
        let mut due: Vec<(PathBuf, Instant)> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(path, at)| (path.clone(), *at))
            .collect();
        due.sort_by_key(|(_, at)| *at);
        for (path, _) in &due {
            self.pending.remove(path);
        }
        // A plugin and its sidecar due together make one report.
        let mut plugins_reported = HashSet::new();
        for (path, _) in due {
            let Some(role) = role(&path) else { continue };
            if plugins_reported.contains(&plugin_of(&path, role)) {
                continue;
            }
            if self.send_updated(&path, role).await? {
                plugins_reported.insert(plugin_of(&path, role));
                self.reported.insert(path, Report::AfterSettle);
            }
        }
        Ok(())
    }

    /// Events were lost (the kernel's queue overflowed): reports the plugins that went away and
    /// treats every plugin there as written in place.
    async fn rescan(&mut self) -> Result<(), Closed> {
        tracing::warn!(
            dir = %self.dir.display(),
            "events from the plugins directory were lost; every plugin in it is reported again"
        );
        let now_present = match list_plugins(&self.dir) {
            Ok(plugins) => plugins,
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot list the plugins directory");
                return Ok(());
            }
        };
        let mut gone: Vec<PathBuf> = self.present.difference(&now_present).cloned().collect();
        gone.sort();
        for path in gone {
            self.removed(&path, Role::Plugin).await?;
        }
        for path in now_present {
            self.arm(&path, false);
        }
        Ok(())
    }

    /// Sends `Updated` for the plugin of `path` if it exists and is not still being written;
    /// returns whether it was sent.
    async fn send_updated(&mut self, path: &Path, role: Role) -> Result<bool, Closed> {
        let plugin = plugin_of(path, role);
        if role == Role::Sidecar && self.pending.contains_key(&plugin) {
            // The plugin itself is being written; its own report comes later and covers this.
            return Ok(false);
        }
        if !is_file(&plugin).await {
            return Ok(false);
        }
        self.present.insert(plugin.clone());
        self.send(Change::Updated(plugin)).await?;
        Ok(true)
    }

    async fn send(&self, change: Change) -> Result<(), Closed> {
        tracing::debug!(?change, "plugins directory change");
        self.changes.send(change).await.map_err(|_| Closed)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]
mod tests {
    use std::fs::File;
    use std::io::Write as _;

    use tempfile::TempDir;
    use tokio::time::{sleep, timeout};

    use super::*;

    /// The longest any expected change may take on a loaded machine.
    const WAIT: Duration = Duration::from_secs(5);
    /// So long that a change seen within [`WAIT`] cannot have come from a timer.
    const NEVER_SETTLES: Duration = Duration::from_secs(60);
    /// What the host passes by default.
    const SETTLE: Duration = Duration::from_millis(300);
    /// Long enough for a stray timer of [`SETTLE`] to fire, with margin.
    const QUIET: Duration = Duration::from_millis(1200);

    fn start(dir: &TempDir, settle: Duration) -> (DirWatcher, mpsc::Receiver<Change>) {
        DirWatcher::start(dir.path(), settle).unwrap()
    }

    async fn next(changes: &mut mpsc::Receiver<Change>) -> Change {
        timeout(WAIT, changes.recv())
            .await
            .expect("no change within the wait")
            .expect("the watcher stopped")
    }

    async fn assert_quiet(changes: &mut mpsc::Receiver<Change>, quiet: Duration) {
        if let Ok(change) = timeout(quiet, changes.recv()).await {
            panic!("expected no change, got {change:?}");
        }
    }

    fn updated(dir: &TempDir, name: &str) -> Change {
        Change::Updated(dir.path().join(name))
    }

    fn removed(dir: &TempDir, name: &str) -> Change {
        Change::Removed(dir.path().join(name))
    }

    /// Writes `name.tmp` and renames it to `name`, as a deploy script does.
    fn copy_in(dir: &TempDir, name: &str, bytes: &[u8]) {
        let tmp = dir.path().join(format!("{name}.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, dir.path().join(name)).unwrap();
    }

    #[tokio::test]
    async fn a_rename_into_place_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_watcher, mut changes) = start(&dir, NEVER_SETTLES);
        copy_in(&dir, "orders.wasm", b"v1");
        assert_eq!(next(&mut changes).await, updated(&dir, "orders.wasm"));
        // Replacing a plugin that is already there is reported too.
        copy_in(&dir, "orders.wasm", b"v2");
        assert_eq!(next(&mut changes).await, updated(&dir, "orders.wasm"));
        assert_quiet(&mut changes, Duration::from_millis(500)).await;
    }

    #[tokio::test]
    async fn a_rename_into_place_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_watcher, mut changes) = start(&dir, SETTLE);
        copy_in(&dir, "orders.wasm", b"v1");
        assert_eq!(next(&mut changes).await, updated(&dir, "orders.wasm"));
        assert_quiet(&mut changes, QUIET).await;
    }

    #[tokio::test]
    async fn a_rename_from_another_directory_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let source = elsewhere.path().join("orders.wasm");
        std::fs::write(&source, b"v1").unwrap();
        let (_watcher, mut changes) = start(&dir, NEVER_SETTLES);
        std::fs::rename(&source, dir.path().join("orders.wasm")).unwrap();
        assert_eq!(next(&mut changes).await, updated(&dir, "orders.wasm"));
        assert_quiet(&mut changes, Duration::from_millis(500)).await;
    }

    #[tokio::test]
    async fn std_fs_write_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_watcher, mut changes) = start(&dir, NEVER_SETTLES);
        let path = dir.path().join("orders.wasm");
        std::fs::write(&path, b"v1").unwrap();
        assert_eq!(next(&mut changes).await, updated(&dir, "orders.wasm"));
        std::fs::write(&path, b"v2").unwrap();
        assert_eq!(next(&mut changes).await, updated(&dir, "orders.wasm"));
        assert_quiet(&mut changes, Duration::from_millis(500)).await;
    }

    #[tokio::test]
    async fn std_fs_write_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_watcher, mut changes) = start(&dir, SETTLE);
        std::fs::write(dir.path().join("orders.wasm"), b"v1").unwrap();
        assert_eq!(next(&mut changes).await, updated(&dir, "orders.wasm"));
        assert_quiet(&mut changes, QUIET).await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn attributes_set_after_the_close_are_part_of_the_same_write() {
        use std::os::unix::fs::PermissionsExt as _;

        // What `install -m 644` does: write, close, then set the mode.
        let dir = tempfile::tempdir().unwrap();
        let (_watcher, mut changes) = start(&dir, SETTLE);
        let path = dir.path().join("orders.wasm");
        std::fs::write(&path, b"v1").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(next(&mut changes).await, updated(&dir, "orders.wasm"));
        assert_quiet(&mut changes, QUIET).await;
    }

    /// Writes three chunks 100 ms apart into `file`, checking that nothing is reported
    /// meanwhile; returns when the last chunk began to be written.
    async fn write_three_chunks(file: &mut File, changes: &mut mpsc::Receiver<Change>) -> Instant {
        let mut last_chunk = Instant::now();
        for chunk in 0..3_u8 {
            last_chunk = Instant::now();
            file.write_all(&[chunk; 4096]).unwrap();
            sleep(Duration::from_millis(100)).await;
            assert!(
                changes.try_recv().is_err(),
                "reported before chunk {chunk} was followed by the next"
            );
        }
        last_chunk
    }

    #[tokio::test]
    async fn a_file_written_in_chunks_then_closed_is_reported_once_after_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let (_watcher, mut changes) = start(&dir, SETTLE);
        let mut file = File::create(dir.path().join("orders.wasm")).unwrap();
        write_three_chunks(&mut file, &mut changes).await;
        drop(file);
        assert_eq!(next(&mut changes).await, updated(&dir, "orders.wasm"));
        assert_quiet(&mut changes, QUIET).await;
    }

    #[tokio::test]
    async fn a_file_written_in_chunks_and_held_open_is_reported_once_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let (_watcher, mut changes) = start(&dir, SETTLE);
        let mut file = File::create(dir.path().join("orders.wasm")).unwrap();
        let last_chunk = write_three_chunks(&mut file, &mut changes).await;
        assert_eq!(next(&mut changes).await, updated(&dir, "orders.wasm"));
        assert!(
            last_chunk.elapsed() >= SETTLE,
            "reported {:?} after the last chunk",
            last_chunk.elapsed()
        );
        // Closing without writing more adds nothing.
        drop(file);
        assert_quiet(&mut changes, QUIET).await;
    }

    #[tokio::test]
    async fn a_removal_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.wasm");
        std::fs::write(&path, b"v1").unwrap();
        let (_watcher, mut changes) = start(&dir, SETTLE);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(next(&mut changes).await, removed(&dir, "orders.wasm"));
        assert_quiet(&mut changes, QUIET).await;
    }

    #[tokio::test]
    async fn a_rename_between_plugin_names_is_a_removal_and_an_update() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("orders.wasm"), b"v1").unwrap();
        let (_watcher, mut changes) = start(&dir, SETTLE);
        std::fs::rename(
            dir.path().join("orders.wasm"),
            dir.path().join("sales.wasm"),
        )
        .unwrap();
        assert_eq!(next(&mut changes).await, removed(&dir, "orders.wasm"));
        assert_eq!(next(&mut changes).await, updated(&dir, "sales.wasm"));
        assert_quiet(&mut changes, QUIET).await;
    }

    #[tokio::test]
    async fn temporary_and_hidden_files_are_never_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (_watcher, mut changes) = start(&dir, SETTLE);
        let ignored = [
            "orders.wasm.tmp",
            "orders.wasm.part",
            "orders.wasm~",
            "#orders.wasm#",
            "#orders#",
            ".orders.wasm",
            ".orders.toml",
            "orders.txt",
        ];
        for name in ignored {
            std::fs::write(dir.path().join(name), b"v1").unwrap();
        }
        // One left open and unfinished, so only its timer could report it.
        let mut open = File::create(dir.path().join("sales.wasm.part")).unwrap();
        open.write_all(b"half").unwrap();
        std::fs::create_dir(dir.path().join("folder.wasm")).unwrap();
        std::fs::rename(
            dir.path().join(".orders.wasm"),
            dir.path().join(".sales.wasm"),
        )
        .unwrap();
        assert_quiet(&mut changes, QUIET).await;
        for name in ignored.iter().filter(|name| **name != ".orders.wasm") {
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
        std::fs::remove_file(dir.path().join(".sales.wasm")).unwrap();
        std::fs::remove_dir(dir.path().join("folder.wasm")).unwrap();
        assert_quiet(&mut changes, QUIET).await;
        drop(open);
        // The watcher was listening all along: the first thing it reports is this plugin.
        std::fs::write(dir.path().join("orders.wasm"), b"v1").unwrap();
        assert_eq!(next(&mut changes).await, updated(&dir, "orders.wasm"));
    }

    #[tokio::test]
    async fn a_sidecar_change_reports_its_plugin() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("orders.wasm"), b"v1").unwrap();
        let (_watcher, mut changes) = start(&dir, SETTLE);
        std::fs::write(dir.path().join("orders.toml"), b"concurrency = 4\n").unwrap();
        assert_eq!(next(&mut changes).await, updated(&dir, "orders.wasm"));
        // A sidecar without its plugin is nothing to load.
        std::fs::write(dir.path().join("sales.toml"), b"concurrency = 4\n").unwrap();
        assert_quiet(&mut changes, QUIET).await;
        // Without its sidecar the plugin goes back to the defaults: that is a change too.
        std::fs::remove_file(dir.path().join("orders.toml")).unwrap();
        assert_eq!(next(&mut changes).await, updated(&dir, "orders.wasm"));
        assert_quiet(&mut changes, QUIET).await;
    }

    #[tokio::test]
    async fn a_sidecar_waits_for_its_plugin_still_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let (_watcher, mut changes) = start(&dir, SETTLE);
        let mut plugin = File::create(dir.path().join("orders.wasm")).unwrap();
        let written = Instant::now();
        plugin.write_all(b"half").unwrap();
        std::fs::write(dir.path().join("orders.toml"), b"concurrency = 4\n").unwrap();
        assert_eq!(next(&mut changes).await, updated(&dir, "orders.wasm"));
        assert!(
            written.elapsed() >= SETTLE,
            "reported before the plugin was quiet"
        );
        drop(plugin);
        assert_quiet(&mut changes, QUIET).await;
    }

    #[tokio::test]
    async fn a_file_renamed_away_while_written_is_never_updated() {
        let dir = tempfile::tempdir().unwrap();
        let (_watcher, mut changes) = start(&dir, SETTLE);
        let mut file = File::create(dir.path().join("orders.wasm")).unwrap();
        file.write_all(b"half").unwrap();
        sleep(Duration::from_millis(50)).await;
        std::fs::rename(
            dir.path().join("orders.wasm"),
            dir.path().join("orders.wasm.bak"),
        )
        .unwrap();
        file.write_all(b"rest").unwrap();
        drop(file);
        assert_eq!(next(&mut changes).await, removed(&dir, "orders.wasm"));
        assert_quiet(&mut changes, QUIET).await;
    }

    #[tokio::test]
    async fn dropping_the_watcher_ends_the_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (watcher, mut changes) = start(&dir, SETTLE);
        drop(watcher);
        let end = timeout(WAIT, changes.recv()).await.expect("still running");
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn start_fails_naming_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("plugins");
        let err = DirWatcher::start(&missing, SETTLE).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(&missing.display().to_string()), "{text}");
    }

    #[test]
    fn roles_follow_the_file_name() {
        let cases = [
            ("orders.wasm", Some(Role::Plugin)),
            ("orders.toml", Some(Role::Sidecar)),
            ("orders.v2.wasm", Some(Role::Plugin)),
            ("orders.wasm.tmp", None),
            ("orders.wasm.part", None),
            ("orders.wasm~", None),
            ("#orders#", None),
            (".orders.wasm", None),
            (".f.wasm.0tWh7K", None),
            ("orders", None),
        ];
        for (name, expected) in cases {
            assert_eq!(role(&Path::new("plugins").join(name)), expected, "{name}");
        }
        assert_eq!(
            plugin_of(Path::new("plugins/orders.toml"), Role::Sidecar),
            Path::new("plugins/orders.wasm")
        );
    }
}
