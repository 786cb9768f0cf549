//! The durable store: every record a node holds, in an embedded database on disk.
//!
//! clusterlab uses [redb](https://docs.rs/redb), a pure-Rust embedded key-value
//! store with ACID transactions: a write transaction's `commit()` returns only
//! after the data is on disk (fsync), so a node that acknowledges a write keeps it
//! through a crash, a `kill -9`, or a power cut.
//!
//! A record is a value or a *tombstone* (a marker that the key was deleted) at a
//! [`Version`]. [`Store::apply`] keeps whichever version is higher, so replicas
//! that receive the same writes in different orders end up the same. This makes
//! applying a record *idempotent* and *commutative*: the property every other part
//! of replication (retries, read repair, anti-entropy) leans on.
//!
//! Writes block the thread while they wait for the disk, so async code runs them
//! through `tokio::task::spawn_blocking` (see [`Store::run`]). A single-key read
//! ([`Store::get`]) is called directly: it never waits for a writer (each read
//! transaction sees a snapshot) and takes a few microseconds from redb's cache,
//! less than handing it to another thread and back would cost.
//!
//! A disk error in a commit (a full disk, a file-size limit) fails that write,
//! and redb then refuses every transaction until the database is reopened, to
//! be sure of what is on disk. The store reopens it by itself at the next write
//! (`Store::reopen`), so a node whose disk had one bad moment, or was freed,
//! takes writes again without a restart; while the disk stays full, at most
//! once a second, and the writes between are refused at once. Reads, which run on the async threads
//! too, never wait for that: meanwhile they fail at once (and one that finds
//! a reopen failed asks for another, in the background).
//!
//! A failed *fsync* is the one disk error the store does not reopen after. On
//! Linux, the pages an fsync could not write are then marked clean: the file
//! as the kernel shows it (and a reopen would read) holds data that may never
//! reach the disk, and commits built on it would be lost with it at the next
//! power cut. So the store watches its file's fsyncs (`Watched`) and, after
//! one failed, takes no more writes until the machine and the node restart.

use std::{
    ops::Bound,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, OnceLock, PoisonError, RwLock, TryLockError, Weak,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use prost::Message;
use redb::{
    BackendError, Database, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, StorageBackend, StorageError, TableDefinition, TransactionError,
    WriteTransaction, backends::FileBackend,
};
use tracing::{error, info, warn};

use crate::{Error, Result, limits, version::Version};

/// key -> `proto::Record` (protobuf-encoded: compact, and already versioned as a format).
const RECORDS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("records");

/// The database file inside `--data-dir`.
const FILE_NAME: &str = "clusterlab.redb";

/// How many tombstones one transaction of a collection removes: the store
/// has one writer, and a write queued behind a collection waits for one
/// batch (a few milliseconds), not for a mass delete's whole collection.
const COLLECT_BATCH: usize = 1000;

/// A value, or the tombstone of a delete, at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub version: Version,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// The client's id for the write that made it; empty if it gave none.
    pub request_id: String,
}

impl Record {
    /// The bytes it adds to a scan's answer: key, value and request id.
    pub fn size(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len) + self.request_id.len()
    }

    /// A tombstone stamped before `before_ms` (Unix ms): past its grace period,
    /// to be collected (see [`crate::tombstones`]).
    pub fn is_tombstone_before(&self, before_ms: u64) -> bool {
        self.value.is_none() && self.version.wall_ms < before_ms
    }

    fn encode(&self) -> Vec<u8> {
        proto::Record::from(self.clone()).encode_to_vec()
    }

    fn decode(key: &str, bytes: &[u8]) -> Result<Self> {
        let record = proto::Record::decode(bytes)
            .map_err(|e| Error::Corrupt(format!("record for key {key:?} is corrupt: {e}")))?;
        Ok(record.into())
    }
}

impl From<Record> for proto::Record {
    fn from(r: Record) -> Self {
        proto::Record {
            key: r.key,
            version: Some(r.version.into()),
            tombstone: r.value.is_none(),
            value: r.value.unwrap_or_default(),
            request_id: r.request_id,
        }
    }
}

impl From<proto::Record> for Record {
    fn from(r: proto::Record) -> Self {
        Record {
            key: r.key,
            version: r.version.map(Version::from).unwrap_or_default(),
            value: (!r.tombstone).then_some(r.value),
            request_id: r.request_id,
        }
    }
}

/// What [`Store::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The version the store holds for the key now.
    pub stored: Version,
    /// False when the store already had this version or a newer one.
    pub changed: bool,
}

/// The node's records on disk. Cheap to clone (the database is shared).
#[derive(Debug, Clone)]
pub struct Store {
    /// The open database: `None` while it is being reopened, and after
    /// reopening it failed (the next write tries again, and so does a read,
    /// in the background).
    db: Arc<RwLock<Option<Arc<Database>>>>,
    /// Held by the one thread reopening the database ([`Store::reopen`]).
    reopening: Arc<Mutex<()>>,
    /// Set while a read has a reopen waiting on the blocking pool.
    reopen_asked: Arc<AtomicBool>,
    /// What the first fsync of the file that failed said ([`Watched`]).
    fsync_failed: Arc<OnceLock<String>>,
    /// Set once a reopen found the file gone, emptied or replaced since the
    /// start ([`GONE_AT_A_REOPEN`]), or a write found another file or none at its
    /// path ([`MOVED_AWAY`]): nothing reopens it again (a restart does), and
    /// it is logged once. 0 until then.
    file_gone: Arc<AtomicU8>,
    /// The device and inode of the file opened ([`Store::still_at_its_path`]).
    file_id: Arc<Mutex<Option<(u64, u64)>>>,
    /// When the database was last reopened, and whether that worked: a
    /// reopen is tried again at most once per [`REOPEN_AGAIN_AFTER`].
    reopened: Arc<Mutex<Option<Reopened>>>,
    path: PathBuf,
}

/// [`Store::file_gone`]: a reopen found the file gone, empty or replaced (and the
/// database closed, so reads fail too)...
const GONE_AT_A_REOPEN: u8 = 1;
/// ...or a write found it deleted or replaced while the database was open
/// (reads go on from the file it holds open).
const MOVED_AWAY: u8 = 2;

/// What to do about a database file gone or replaced, in either case.
const RESTART_WITHOUT_THE_FILE: &str = "restart the node: it opens what is there then (an empty \
     database if nothing is), and anti-entropy copies back the keys other nodes also hold";

/// The last reopen of the database.
#[derive(Debug, Clone, Copy)]
struct Reopened {
    at: Instant,
    worked: bool,
}

/// How long [`Store::reopen`] waits for the operations still using the failed
/// database to let go of its file, which redb opens only once at a time.
const REOPEN_PATIENCE: Duration = Duration::from_secs(5);

/// A reopen that failed, or one that worked and was stopped again by the next
/// disk error (a disk that stays full), is not tried again until this long
/// after: each write would otherwise reopen the file (and log it) only to fail
/// again, or wait its turn to try for [`REOPEN_PATIENCE`] itself.
const REOPEN_AGAIN_AFTER: Duration = Duration::from_secs(1);

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::DataDir {
            path: dir.to_path_buf(),
            cause: match certs::files::file_in_the_way(dir) {
                Some(why) => format!("{why}; give --data-dir a directory (made if missing)"),
                None if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    format!("{e}; check the directory's owner and mode, or give --data-dir another")
                }
                None if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
                    format!("{e}; give --data-dir a directory on a file system that takes writes")
                }
                None => format!("{e}; give --data-dir another"),
            },
        })?;
        let path = dir.join(FILE_NAME);
        let fsync_failed = Arc::default();
        let db = open_database(&path, &fsync_failed)?;
        // Create the table up front so read transactions always find it.
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(RECORDS).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(Store {
            db: Arc::new(RwLock::new(Some(Arc::new(db)))),
            reopening: Arc::default(),
            reopen_asked: Arc::default(),
            fsync_failed,
            file_gone: Arc::default(),
            file_id: Arc::new(Mutex::new(file_id(&path))),
            reopened: Arc::default(),
            path,
        })
    }

    /// [`Store::open`], and the highest version the store holds, which
    /// reads every record: a damaged file shows here, at start, and the error
    /// says what to do about it rather than quote the database's internals.
    /// (redb checks some of its invariants with a panic; that is caught too.)
    pub fn open_and_scan(dir: &Path) -> Result<(Store, Option<Version>)> {
        let path = dir.join(FILE_NAME);
        let opened = quietly(|| {
            let store = Store::open(dir)?;
            let highest = store.highest_version()?;
            Ok((store, highest))
        });
        match opened {
            Ok(Err(Error::Corrupt(why))) => Err(damaged(&path, &why)),
            Ok(opened) => opened,
            Err(panic) => {
                let why = match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
                    (Some(text), _) => text.to_string(),
                    (_, Some(text)) => text.clone(),
                    _ => "it made the database's code panic".to_string(),
                };
                Err(damaged(&path, &why))
            }
        }
    }

    /// A write transaction, on a database reopened first if a disk error has
    /// made redb refuse every transaction. Writes run on tokio's blocking
    /// pool ([`Store::run`]), where waiting for the reopen holds up no one else.
    fn begin_write(&self) -> Result<WriteTransaction> {
        let current = self.db.read().expect("store lock poisoned").clone();
        let db = match current {
            // (Not once it is closed: a reopen looks for the file itself.)
            Some(db) => {
                self.still_at_its_path()?;
                db
            }
            // Being reopened (wait for it), or the last reopen failed (try again).
            None => self.reopen(None)?,
        };
        match db.begin_write() {
            Err(TransactionError::Storage(StorageError::PreviousIo)) => {
                let failed = Arc::downgrade(&db);
                drop(db);
                self.reopen(Some(&failed))?.begin_write().map_err(storage)
            }
            began => began.map_err(storage),
        }
    }

    /// Refuses a write once the file opened is no longer at its path: deleted
    /// (`rm -rf` of a data directory to start a lab afresh) or another put
    /// there. redb writes on to the file it holds open, so every write
    /// acknowledged after that would be gone at the next start, unsaid. A
    /// stat per write, beside its fsync. A path that cannot be looked at for
    /// a moment (a permission, an I/O error) is not taken for gone: the
    /// write finds out what its own I/O can do.
    fn still_at_its_path(&self) -> Result<()> {
        // Found once, refused until a restart, the file put back or not.
        if self.file_gone.load(Ordering::Acquire) != 0 {
            return Err(self.refused_for_good().expect("the file was found gone"));
        }
        let opened = *self.file_id.lock().expect("file id poisoned");
        let now = match std::fs::metadata(&self.path) {
            Ok(file) => Some((file.dev(), file.ino())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(_) => return Ok(()),
        };
        if opened.is_none() || now == opened {
            return Ok(());
        }
        let first = self
            .file_gone
            .compare_exchange(0, MOVED_AWAY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            error!(
                path = %self.path.display(),
                "the database file was deleted or replaced while the node ran; it takes no \
                 more writes (they would be lost at the next start)"
            );
        }
        Err(self.refused_for_good().expect("the file is gone"))
    }

    /// A read transaction. Reads run on the async threads too ([`Store::get`]),
    /// so they never wait for a reopen: while one runs they fail at once, and
    /// after one failed they ask for another, in the background, and fail. (A
    /// node whose reads all failed would wait for a write that may never come:
    /// its probes answer meanwhile, and its peers go on sending it some.)
    fn begin_read(&self) -> Result<ReadTransaction> {
        let current = match self.db.try_read() {
            Ok(slot) => slot.clone(),
            Err(TryLockError::WouldBlock) => None,
            Err(TryLockError::Poisoned(e)) => panic!("store lock poisoned: {e}"),
        };
        match current {
            Some(db) => db.begin_read().map_err(storage),
            None if let Some(refused) = self.refused_for_good() => Err(refused),
            None if self.reopening.try_lock().is_err() => Err(Error::Storage(
                "the database is being reopened after a disk error; try again in a moment".into(),
            )),
            None => {
                self.reopen_in_the_background();
                Err(Error::Storage(
                    "the database could not be reopened after a disk error (the node's log \
                     says why); it is tried again at most once a second"
                        .into(),
                ))
            }
        }
    }

    /// Runs `read` on a read transaction. A read that finds the database
    /// stopped by a disk error (one its cache could not answer) asks for the
    /// reopen a write would make, in the background: a node only read from
    /// (its peers' anti-entropy, with no client writing to it) would
    /// otherwise serve from a stopped database until the next write came.
    fn reading<T>(&self, read: impl FnOnce(ReadTransaction) -> Result<T>) -> Result<T> {
        let result = self.begin_read().and_then(read);
        if let Err(Error::DiskStopped(_)) = &result {
            if let Some(refused) = self.refused_for_good() {
                return Err(refused);
            }
            // Dropped unused, the transaction writes nothing.
            self.in_the_background(|store| drop(store.begin_write()));
        }
        result
    }

    /// Asks for a reopen on tokio's blocking pool, unless one is asked for
    /// already. (Outside tokio, in a tool or a test, it reopens here.)
    fn reopen_in_the_background(&self) {
        // Logged by `reopen` if it fails; the next read asks again.
        self.in_the_background(|store| drop(store.reopen(None)));
    }

    /// Runs `work` (a reopen) on tokio's blocking pool, unless one is under
    /// way already. (Outside tokio, in a tool or a test, it runs here.)
    fn in_the_background(&self, work: impl FnOnce(&Store) + Send + 'static) {
        if self.reopen_asked.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        let run = move || {
            work(&store);
            store.reopen_asked.store(false, Ordering::Release);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(run)),
            Err(_) => run(),
        }
    }

    /// Closes the database that `failed` (if any) and opens its file again,
    /// which makes redb check and repair it, one thread at a time. If another
    /// has already reopened it meanwhile, returns that one. The slot is empty
    /// while the file is being opened, without the lock held: reads fail at
    /// once rather than wait, and writes wait here, on the blocking pool.
    fn reopen(&self, failed: Option<&Weak<Database>>) -> Result<Arc<Database>> {
        // The stopped database stays in its slot: what its cache holds can
        // still be read, and nothing more is written to the file.
        if let Some(refused) = self.refused_for_good() {
            return Err(refused);
        }
        // A panic while reopening (redb checks a damaged file with some) must
        // not leave every later reopen to panic too.
        let _one_at_a_time = self
            .reopening
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        {
            let mut slot = self.db.write().expect("store lock poisoned");
            // (The `Weak` keeps its allocation, so no new database can be at
            // that address and be taken for the failed one.)
            if let Some(db) = slot.as_ref()
                && failed.is_none_or(|failed| !std::ptr::eq(Arc::as_ptr(db), failed.as_ptr()))
            {
                return Ok(db.clone());
            }
            // Too soon after the last reopen: refused, as it would fail
            // again (the database in the slot, stopped, still answers reads
            // from its cache).
            let last = *self.reopened.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(last) = last.filter(|last| last.at.elapsed() < REOPEN_AGAIN_AFTER) {
                match (last.worked, failed.is_some()) {
                    (false, _) => {
                        return Err(Error::Storage(
                            "the database could not be reopened after a disk error a moment \
                             ago (the node's log says why); it is tried again at most once a \
                             second"
                                .into(),
                        ));
                    }
                    (true, true) => {
                        return Err(Error::DiskStopped(
                            "a disk error stopped the database again a moment after it was \
                             reopened (the node's log says why: is the disk under --data-dir \
                             full, or the node at a file-size limit?); it is reopened at most \
                             once a second"
                                .into(),
                        ));
                    }
                    // Reopened a moment ago, and gone from its slot since:
                    // tried again.
                    (true, false) => {}
                }
            }
            if slot.take().is_some() {
                warn!(
                    path = %self.path.display(),
                    "a disk error made the database refuse every transaction; reopening it"
                );
            }
        }
        let reopened = |worked| {
            let at = Instant::now();
            *self.reopened.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(Reopened { at, worked });
        };
        // Dropped above: the file is free once the operations still using it
        // (each of which fails) are done.
        let deadline = Instant::now() + REOPEN_PATIENCE;
        let cannot = |e: &dyn std::fmt::Display| {
            reopened(false);
            error!(path = %self.path.display(), error = %e, "cannot reopen the database");
            Error::Storage(format!(
                "the database could not be reopened after a disk error ({e}); a request a \
                 second from now tries again, or restart the node"
            ))
        };
        // Opened, not created (`watched` refuses a missing or empty file too):
        // a file gone or emptied since the start (space freed by deleting it,
        // a volume swapped) would otherwise become a new, empty database, and
        // the node serve on without its keys, unsaid.
        // Gone means not found: a file that cannot be looked at for a moment
        // (a permission, an I/O error) is opened below, and fails, and is
        // tried again.
        // Nor is another file put in its place (a backup moved there, another
        // node's): the node would serve its keys as its own, unsaid.
        let opened = *self.file_id.lock().expect("file id poisoned");
        let gone = match std::fs::metadata(&self.path) {
            Ok(file) => file.len() == 0 || opened.is_some_and(|id| id != (file.dev(), file.ino())),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if gone {
            let first = self
                .file_gone
                .compare_exchange(0, GONE_AT_A_REOPEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if first {
                error!(path = %self.path.display(), "the database file is gone, empty or replaced");
            }
            return Err(self.refused_for_good().expect("the file is gone"));
        }
        let db = loop {
            let opened =
                std::panic::catch_unwind(|| watched(&self.path, false, &self.fsync_failed));
            match opened {
                Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(Ok(db)) => break Arc::new(db),
                Ok(Err(e)) => return Err(cannot(&e)),
                Err(_) => return Err(cannot(&"opening the file panicked: it is damaged")),
            }
        };
        reopened(true);
        *self.file_id.lock().expect("file id poisoned") = file_id(&self.path);
        info!(path = %self.path.display(), "database reopened; it takes writes again");
        *self.db.write().expect("store lock poisoned") = Some(db.clone());
        Ok(db)
    }

    /// Whether it takes no more writes until the node restarts (a failed
    /// fsync, its file gone or replaced): not a reopen that may yet work.
    /// Reads go on from what the stopped or deleted database can answer, if
    /// it is still open.
    pub fn is_refused_for_good(&self) -> bool {
        self.refused_for_good().is_some()
    }

    /// What a write (or a read the database cannot answer) is told instead
    /// of the store reopening it, if nothing will until a restart: an fsync
    /// of the file failed, a reopen found the file gone or replaced, or a
    /// write found it deleted or replaced. No request then tries again (or
    /// logs it again).
    pub fn refused_for_good(&self) -> Option<Error> {
        if let Some(cause) = self.fsync_failed.get() {
            return Some(Error::Storage(after_a_failed_fsync(&self.path, cause)));
        }
        match self.file_gone.load(Ordering::Acquire) {
            GONE_AT_A_REOPEN => Some(Error::Storage(format!(
                "the database file {} is gone, empty or replaced since the node started, so it \
                 is not reopened (as an empty one, or as another's); {RESTART_WITHOUT_THE_FILE}",
                self.path.display()
            ))),
            MOVED_AWAY => Some(Error::Storage(format!(
                "the database file {} was deleted or replaced while the node ran, so it takes \
                 no more writes: they would go to the file it holds open, and be lost at the \
                 next start (reads go on from it); {RESTART_WITHOUT_THE_FILE}",
                self.path.display()
            ))),
            _ => None,
        }
    }

    /// Why this store takes no more writes, if an fsync of its file failed
    /// or its file was found gone or replaced (nor reads, when a reopen found
    /// it so), in short, for status (a write that is refused says it at
    /// length). A failed fsync first, as in `refused_for_good`.
    pub fn writes_refused(&self) -> Option<String> {
        if let Some(cause) = self.fsync_failed.get() {
            return Some(format!(
                "takes no more writes: an fsync of {} failed ({cause}); check the disk \
                 (dmesg), then restart the machine, not only the node",
                self.path.display()
            ));
        }
        match self.file_gone.load(Ordering::Acquire) {
            GONE_AT_A_REOPEN => Some(format!(
                "takes no more reads or writes: its database file {} is gone, empty or \
                 replaced since it started; restart the node",
                self.path.display()
            )),
            MOVED_AWAY => Some(format!(
                "takes no more writes: its database file {} was deleted or replaced while it \
                 ran (reads go on from the file still open); restart the node",
                self.path.display()
            )),
            _ => None,
        }
    }

    /// redb's one writer, held until the transaction is dropped: writes
    /// wait for it meanwhile.
    #[cfg(test)]
    pub(crate) fn holding_the_writer(&self) -> WriteTransaction {
        self.begin_write().expect("the writer")
    }

    /// The store while a reopen runs: no database in its slot, and reads
    /// fail at once, until the guard is dropped (the slot stays empty).
    #[cfg(test)]
    pub(crate) fn as_during_a_reopen(&self) -> std::sync::MutexGuard<'_, ()> {
        let reopening = self.reopening.lock().unwrap();
        *self.db.write().unwrap() = None;
        reopening
    }

    /// The store as an fsync that failed leaves it, with no database in its
    /// slot (as when it failed in a reopen): it reads and writes nothing.
    #[cfg(test)]
    pub(crate) fn stop_as_after_a_failed_fsync(&self) {
        let _ = self
            .fsync_failed
            .set("Input/output error (made to fail)".into());
        *self.db.write().unwrap() = None;
    }

    /// The store as an fsync that failed in a commit leaves it: the stopped
    /// database stays in its slot, and its cache can still be read.
    #[cfg(test)]
    pub(crate) fn as_after_a_failed_fsync_in_a_commit(&self) {
        let _ = self
            .fsync_failed
            .set("Input/output error (made to fail)".into());
    }

    /// Where the database file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs a blocking store operation on tokio's blocking thread pool.
    pub async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || op(&store))
            .await
            .map_err(|e| Error::Storage(format!("store task failed: {e}")))?
    }

    /// Stores `record` unless the store already holds that version or a newer
    /// one. Durable when it returns.
    ///
    /// The same version holding another write is refused, not taken for this
    /// one: a version names one write, and answering with it would acknowledge
    /// a value that is on no disk. It takes a clock set back across a restart,
    /// or two nodes with one name, to stamp two writes alike.
    pub fn apply(&self, record: &Record) -> Result<Applied> {
        self.apply_by(record, None)
    }

    /// A write transaction, unless `write_by` (Unix ms) has passed
    /// ([`Error::Overdue`]): looked at before the wait for redb's one writer,
    /// so that a write late already takes no turn, and again once it has
    /// begun ([`Store::apply_by`] says why).
    fn begin_write_by(&self, write_by: Option<u64>) -> Result<WriteTransaction> {
        let overdue = || {
            write_by
                .and_then(proto::deadline::overdue)
                .map(Error::Overdue)
        };
        if let Some(late) = overdue() {
            return Err(late);
        }
        let txn = self.begin_write()?;
        match overdue() {
            Some(late) => Err(late),
            None => Ok(txn),
        }
    }

    /// [`Store::apply`], unless `write_by` (Unix ms) has passed by the time
    /// the write transaction begins: then it is refused ([`Error::Overdue`]).
    ///
    /// Checked before the wait, so that a write late already takes no turn,
    /// and again once the transaction has begun: it may wait for a while
    /// for redb's one writer (a reopen after a disk error, a long tombstone
    /// collection, a large anti-entropy batch), and a tombstone collection
    /// that goes first may remove the delete that this record must not
    /// outlive. Inside the transaction, the check and the write are one step
    /// against every other writer.
    pub fn apply_by(&self, record: &Record, write_by: Option<u64>) -> Result<Applied> {
        let txn = self.begin_write_by(write_by)?;
        let applied = (|| {
            let mut table = txn.open_table(RECORDS).map_err(storage)?;
            let current = match table.get(record.key.as_str()).map_err(storage)? {
                Some(bytes) => Some(Record::decode(&record.key, bytes.value())?),
                None => None,
            };
            match current {
                Some(current) if current.version == record.version && current != *record => {
                    Err(Error::Aborted(format!(
                        "version {} of {:?} already stands for another write (stamped by a \
                         clock set back since, or by another node named {}); {SEND_IT_AGAIN}",
                        record.version, record.key, record.version.node
                    )))
                }
                Some(current) if current.version >= record.version => Ok(Applied {
                    stored: current.version,
                    changed: false,
                }),
                _ => {
                    table
                        .insert(record.key.as_str(), record.encode().as_slice())
                        .map_err(storage)?;
                    Ok(Applied {
                        stored: record.version.clone(),
                        changed: true,
                    })
                }
            }
        })();
        match applied {
            Ok(Applied { changed: true, .. }) => txn.commit().map_err(storage)?,
            Ok(_) => txn.abort().map_err(storage)?,
            // What failed says why; aborting after a disk error fails too, and
            // would say only "previous I/O error".
            Err(_) => drop(txn),
        }
        applied
    }

    /// The record for `key` (value or tombstone), if any.
    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        self.reading(|txn| {
            let table = txn.open_table(RECORDS).map_err(storage)?;
            match table.get(key).map_err(storage)? {
                Some(bytes) => Ok(Some(Record::decode(key, bytes.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Calls `visit` with the record of each of `keys` held here, a key
    /// once however often it is named, until it returns false. Read in one
    /// transaction, a record at a time: a repair's batch of keys may name
    /// gigabytes of values, which are never all in memory at once.
    pub fn each_of(&self, keys: &[String], mut visit: impl FnMut(Record) -> bool) -> Result<()> {
        self.reading(|txn| {
            let table = txn.open_table(RECORDS).map_err(storage)?;
            let mut seen = std::collections::HashSet::new();
            for key in keys.iter().filter(|key| seen.insert(key.as_str())) {
                if let Some(bytes) = table.get(key.as_str()).map_err(storage)?
                    && !visit(Record::decode(key, bytes.value())?)
                {
                    break;
                }
            }
            Ok(())
        })
    }

    /// Records whose key starts with `prefix`, in key order, after `start_after`;
    /// at most `limit` of them and about [`limits::MAX_SCAN_BYTES`], and whether
    /// there were more. Tombstones are skipped unless `tombstones` is true.
    pub fn scan(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
        tombstones: bool,
    ) -> Result<(Vec<Record>, bool)> {
        self.reading(|txn| {
            let table = txn.open_table(RECORDS).map_err(storage)?;
            let start = if start_after >= prefix {
                start_after
            } else {
                prefix
            };
            let mut records = Vec::new();
            let mut budget = limits::ScanBudget::new(limit);
            for entry in table.range(start..).map_err(storage)? {
                let (key, bytes) = entry.map_err(storage)?;
                let key = key.value();
                if !key.starts_with(prefix) {
                    break;
                }
                if key == start_after {
                    continue;
                }
                let record = Record::decode(key, bytes.value())?;
                if record.value.is_none() && !tombstones {
                    continue;
                }
                if !budget.take(record.size()) {
                    return Ok((records, true));
                }
                records.push(record);
            }
            Ok((records, false))
        })
    }

    /// Calls `visit` with every record, in key order, until it returns false.
    /// Reads one consistent snapshot: writes made meanwhile are not seen.
    pub fn for_each(&self, mut visit: impl FnMut(Record) -> bool) -> Result<()> {
        self.reading(|txn| {
            let table = txn.open_table(RECORDS).map_err(storage)?;
            for entry in table.iter().map_err(storage)? {
                let (key, bytes) = entry.map_err(storage)?;
                if !visit(Record::decode(key.value(), bytes.value())?) {
                    break;
                }
            }
            Ok(())
        })
    }

    /// The highest version of any record held (tombstones included), or `None`
    /// when the store is empty. Reads every record: called once, at start.
    pub fn highest_version(&self) -> Result<Option<Version>> {
        let mut highest: Option<Version> = None;
        self.for_each(|record| {
            if highest.as_ref().is_none_or(|h| record.version > *h) {
                highest = Some(record.version);
            }
            true
        })?;
        Ok(highest)
    }

    /// Deletes every tombstone stamped before `before_ms` (Unix ms). Returns
    /// how many went. Values are never touched. Stops, with what it has done,
    /// once `abandoned` is cancelled (the node stopping: the whole store
    /// read after "node stopped" would hold the process up).
    pub fn collect_tombstones(
        &self,
        before_ms: u64,
        abandoned: &tokio_util::sync::CancellationToken,
    ) -> Result<u64> {
        // Found with a read transaction, so writes are not held up while the
        // whole store is read; usually there is nothing to collect.
        let mut old = Vec::new();
        self.for_each(|record| {
            if record.is_tombstone_before(before_ms) {
                old.push(record.key);
            }
            !abandoned.is_cancelled()
        })?;
        if old.is_empty() {
            return Ok(0);
        }
        // A write may have replaced the tombstone since it was found. A
        // transaction per batch: the store has one writer, and writes queued
        // behind a mass delete's collection would pass their write-by.
        let mut removed = 0;
        for batch in old.chunks(COLLECT_BATCH) {
            if abandoned.is_cancelled() {
                break;
            }
            removed += self.remove_where(batch, String::as_str, |_, record| {
                record.is_tombstone_before(before_ms)
            })?;
        }
        Ok(removed)
    }

    /// Removes each of `items`' keys whose record `still` holds for, in one
    /// transaction; returns how many it removed.
    fn remove_where<T>(
        &self,
        items: &[T],
        key: impl Fn(&T) -> &str,
        still: impl Fn(&T, &Record) -> bool,
    ) -> Result<u64> {
        let txn = self.begin_write()?;
        let mut removed = 0;
        {
            let mut table = txn.open_table(RECORDS).map_err(storage)?;
            for item in items {
                let key = key(item);
                let remove = match table.get(key).map_err(storage)? {
                    Some(bytes) => still(item, &Record::decode(key, bytes.value())?),
                    None => false,
                };
                if remove {
                    table.remove(key).map_err(storage)?;
                    removed += 1;
                }
            }
        }
        txn.commit().map_err(storage)?;
        Ok(removed)
    }

    /// Applies many records in one transaction (one disk sync instead of one
    /// each), keeping for each key the higher version, as [`Store::apply`]
    /// does, except that a record at the very version already stored is
    /// skipped, not refused as [`Error::Aborted`]. Returns how many changed.
    pub fn apply_many(&self, records: &[Record]) -> Result<usize> {
        self.apply_many_by(records, None)
    }

    /// [`Store::apply_many`], unless `write_by` (Unix ms) has passed by the
    /// time the write transaction begins, as [`Store::apply_by`]: for records
    /// anti-entropy copies, which must not be written once a delete newer
    /// than them may have been collected.
    pub fn apply_many_by(&self, records: &[Record], write_by: Option<u64>) -> Result<usize> {
        let txn = self.begin_write_by(write_by)?;
        let mut changed = 0;
        {
            let mut table = txn.open_table(RECORDS).map_err(storage)?;
            for record in records {
                let newer = match table.get(record.key.as_str()).map_err(storage)? {
                    Some(bytes) => {
                        Record::decode(&record.key, bytes.value())?.version < record.version
                    }
                    None => true,
                };
                if newer {
                    table
                        .insert(record.key.as_str(), record.encode().as_slice())
                        .map_err(storage)?;
                    changed += 1;
                }
            }
        }
        if changed > 0 {
            txn.commit().map_err(storage)?;
        } else {
            txn.abort().map_err(storage)?;
        }
        Ok(changed)
    }

    /// Removes each `(key, version)` whose record is still at that version,
    /// in one transaction; returns how many it removed. For records handed
    /// off to their replicas ([`crate::handoff`]): a newer write that arrived
    /// meanwhile stays.
    pub fn remove_if_at(&self, records: &[(String, Version)]) -> Result<u64> {
        self.remove_where(
            records,
            |(key, _)| key.as_str(),
            |(_, version), record| record.version == *version,
        )
    }

    /// How many records (values and tombstones) the store holds.
    pub fn len(&self) -> Result<u64> {
        self.reading(|txn| {
            let table = txn.open_table(RECORDS).map_err(storage)?;
            table.len().map_err(storage)
        })
    }

    /// True when the store holds no records.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// The database file at `path` cannot be read (`why`): what to do about it.
fn damaged(path: &Path, why: &str) -> Error {
    Error::DataDir {
        path: directory_of(path),
        cause: format!(
            "its database {FILE_NAME} is damaged ({why}); move {FILE_NAME} away (and keep \
             it) and start the node again: it starts empty, and anti-entropy copies back the \
             keys other nodes also hold. Those only this node held (one replica, or W=1 \
             writes not yet copied) are only in the moved file"
        ),
    }
}

/// The limit on waiting for a disk to take writes again: the deletes a node
/// missed meanwhile are collected elsewhere after the grace, and its old
/// values would come back (docs/replication.md).
const REFUSED_TOO_LONG: &str = "If its writes fail for longer than its --tombstone-grace, \
    stop it and start it with an empty --data-dir instead, or deletes it missed come back \
    (docs/replication.md)";

/// How a write refused for a version already taken ends: the coordinator,
/// which stamps it again itself, says so in these words' place.
pub(crate) const SEND_IT_AGAIN: &str = "this write was not stored, so send it again";

/// The data directory the database file at `path` is in: what the user gave
/// as `--data-dir`, and what an error names.
fn directory_of(path: &Path) -> PathBuf {
    path.parent().unwrap_or(path).to_path_buf()
}

/// What a write is told after an fsync of the database file at `path`
/// failed (`cause`).
fn after_a_failed_fsync(path: &Path, cause: &str) -> String {
    format!(
        "an fsync of {} failed ({cause}), so this node takes no more writes: the kernel may \
         have dropped what it could not write while still showing it, and writes built on \
         that would be lost at the next power cut. Check the disk (dmesg), then restart the \
         machine, not only the node (its cache of the file is what cannot be trusted): at \
         start the database falls back to its last whole commit. Refused longer than its \
         --tombstone-grace, it must start with an empty --data-dir instead, or keys deleted \
         meanwhile come back (docs/replication.md)",
        path.display()
    )
}

/// The database file as redb's own [`FileBackend`] reads and writes it, with
/// one thing more: the first fsync of it that fails is kept in `fsync_failed`
/// (see the module's docs for why the store must know), and the error says
/// what it means. (redb syncs in a commit, and in a write that grows the
/// file, so it reaches the write that met it through any of its calls.)
/// Any backend can be watched: the tests watch one that fails on demand.
#[derive(Debug)]
struct Watched<B = FileBackend> {
    file: B,
    path: PathBuf,
    fsync_failed: Arc<OnceLock<String>>,
}

impl<B: StorageBackend> StorageBackend for Watched<B> {
    fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data().map_err(|e| {
            if self.fsync_failed.set(e.to_string()).is_ok() {
                error!(path = %self.path.display(), error = %e, "an fsync of the database failed");
            }
            // Not its kind: a full disk's hint ("free space, and it takes
            // writes again") would be wrong here.
            std::io::Error::other(after_a_failed_fsync(&self.path, &e.to_string()))
        })
    }

    // The rest is the file's own.
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.file.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.file.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

/// Opens the database file at `path`, made if `create` and missing, through
/// [`Watched`]: what `Database::create` and `Database::open` do, but for the
/// watch. Not `create`, a missing or empty file is refused.
fn watched(
    path: &Path,
    create: bool,
    fsync_failed: &Arc<OnceLock<String>>,
) -> Result<Database, redb::DatabaseError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)?;
    let file = FileBackend::new(file)?;
    // What `Database::open` refuses, and `create_with_backend` would make a
    // new database of. Asked of the file opened, so that no emptying can
    // come between the look and the open.
    if !create && file.len()? == 0 {
        return Err(std::io::Error::other("the file is empty").into());
    }
    redb::Builder::new().create_with_backend(Watched {
        file,
        path: path.to_path_buf(),
        fsync_failed: fsync_failed.clone(),
    })
}

/// The device and inode of the file at `path`, if it can be looked at.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    (std::fs::metadata(path).ok()).map(|file| (file.dev(), file.ino()))
}

/// Opens (or creates) the database at `path`, saying what to do when it cannot.
fn open_database(path: &Path, fsync_failed: &Arc<OnceLock<String>>) -> Result<Database> {
    watched(path, true, fsync_failed).map_err(|e| match e {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => damaged(path, &why),
        e => Error::DataDir {
            path: directory_of(path),
            cause: match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "another process has its database open (most likely another \
                     clusterlab-node given this --data-dir); stop it, or give --data-dir \
                     another directory"
                        .into()
                }
                // redb's "Not a redb database: magic number mismatch".
                redb::DatabaseError::Storage(redb::StorageError::Io(io))
                    if io.kind() == std::io::ErrorKind::InvalidData =>
                {
                    format!(
                        "{FILE_NAME} in it is not a clusterlab-node database ({io}); move it \
                         away, or give --data-dir another directory"
                    )
                }
                redb::DatabaseError::Storage(redb::StorageError::Io(io))
                    if io.kind() == std::io::ErrorKind::IsADirectory =>
                {
                    format!(
                        "{FILE_NAME} in it is a directory ({io}), where the database file goes; \
                         move it away, or give --data-dir another directory"
                    )
                }
                redb::DatabaseError::Storage(redb::StorageError::Io(io))
                    if io.kind() == std::io::ErrorKind::ReadOnlyFilesystem =>
                {
                    format!(
                        "{io}: the node writes every acknowledged write here; give --data-dir \
                         a directory on a writable file system"
                    )
                }
                redb::DatabaseError::Storage(redb::StorageError::Io(io))
                    if io.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    format!(
                        "{io}; check the owner and mode of the directory and of {FILE_NAME} in \
                         it (this node must be able to write both), or give --data-dir another \
                         directory"
                    )
                }
                other => other.to_string(),
            },
        },
    })
}

/// Runs `work`, catching a panic in it without the panic hook's report
/// (the thread, the file, "note: run with RUST_BACKTRACE=1"): at start, a
/// damaged file makes redb panic, and what to do about it is said instead,
/// with the panic's message. Only at start, before the node serves: the
/// hook is the whole process's.
fn quietly<T>(work: impl FnOnce() -> T + std::panic::UnwindSafe) -> std::thread::Result<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(work);
    std::panic::set_hook(hook);
    result
}

/// A database failure, logged: it is the disk's or the database's, not the
/// request's, and the client is told only that storage failed.
fn storage(e: impl Into<redb::Error>) -> Error {
    let e = e.into();
    error!(error = %e, "the database failed");
    match e {
        redb::Error::Corrupted(why) => Error::Corrupt(why),
        // ENOSPC, EDQUOT: from a write (a failed fsync stops the store).
        redb::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) =>
        {
            Error::Storage(format!(
                "{io}: the disk under the node's --data-dir is full (or at a quota); the write \
                 was not stored. Free space there: a running node takes writes again by \
                 itself, with no restart. {REFUSED_TOO_LONG}"
            ))
        }
        // EFBIG: the process's own limit, which freeing space does not lift.
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::FileTooLarge => {
            Error::Storage(format!(
                "{io}: the node's database file reached the node process's file-size limit \
                 (`ulimit -f`, `prlimit --fsize`, docker's `--ulimit fsize`); the write was \
                 not stored. Raise or lift the limit (prlimit --pid PID --fsize=unlimited): \
                 a running node takes writes again by itself, with no restart. \
                 {REFUSED_TOO_LONG}"
            ))
        }
        // redb's own words ask to close and reopen it, which the store does.
        redb::Error::PreviousIo => Error::DiskStopped(
            "a disk error stopped the database (the node's log has the cause); the node \
             reopens it (at most once a second), so try again in a moment"
                .into(),
        ),
        other => Error::Storage(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// A write whose deadline passes while it waits for the database's one
    /// writer is refused when its turn comes, and nothing of it is stored;
    /// one in time is stored. Run in a thread of its own, so that a hang
    /// fails the test.
    #[test]
    fn a_write_whose_deadline_passes_while_it_waits_for_the_writer_is_refused() {
        overdue_while_waiting_is_refused(|store, record, write_by| {
            store.apply_by(record, Some(write_by)).map(|a| a.changed)
        });
    }

    /// The same of a batch anti-entropy copies ([`Store::apply_many_by`]).
    #[test]
    fn a_batch_whose_deadline_passes_while_it_waits_for_the_writer_is_refused() {
        overdue_while_waiting_is_refused(|store, record, write_by| {
            let batch = [record.clone()];
            store.apply_many_by(&batch, Some(write_by)).map(|n| n == 1)
        });
    }

    /// Writes with `write` (true if it changed something) in time, then with
    /// a deadline that passes while the writer is held, then with one passed.
    fn overdue_while_waiting_is_refused(
        write: impl Fn(&Store, &Record, u64) -> Result<bool> + Clone + Send + 'static,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let in_time = proto::deadline::write_by(Duration::from_secs(60));
        let stored = write(&store, &record("early", 1, Some("v")), in_time);
        assert!(stored.unwrap());

        // Time enough for the write to reach the writer's door first.
        let write_by = proto::deadline::write_by(Duration::from_secs(2));
        let held = store.begin_write().unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let (waiting, late_write) = (store.clone(), write.clone());
        std::thread::spawn(move || {
            let _ = done.send(late_write(
                &waiting,
                &record("late", 1, Some("v")),
                write_by,
            ));
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while proto::deadline::overdue(write_by).is_none() {
            assert!(Instant::now() < deadline, "the clock did not pass write-by");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(finished.try_recv().is_err(), "the write did not wait");
        drop(held);
        let refused = finished
            .recv_timeout(Duration::from_secs(60))
            .expect("the waiting write hung");
        assert!(matches!(refused, Err(Error::Overdue(_))), "{refused:?}");
        assert_eq!(store.get("late").unwrap(), None);
        assert!(store.get("early").unwrap().is_some());

        // One late already is refused at once, without waiting its turn.
        let held = store.begin_write().unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let late = store.clone();
        let passed = proto::deadline::write_by(Duration::ZERO) - 1_000;
        std::thread::spawn(move || {
            let _ = done.send(write(&late, &record("later", 1, Some("v")), passed));
        });
        let refused = finished
            .recv_timeout(Duration::from_secs(60))
            .expect("an overdue write waited for the writer");
        assert!(matches!(refused, Err(Error::Overdue(_))), "{refused:?}");
        drop(held);
    }

    /// After a reopen that failed (the database gone from its slot), a read
    /// fails at once and asks for another reopen, so that reads alone bring
    /// the store back; a write reopens it too. (A read used to wait for
    /// itself for ever: it held the lock to read the slot while it asked for
    /// it to write.) Run in a thread of its own, so that a hang fails the test.
    #[test]
    fn after_a_failed_reopen_reads_fail_at_once_and_bring_the_store_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.apply(&record("k", 1, Some("v"))).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            *store.db.write().unwrap() = None;
            let first = store.get("k").map_err(|e| e.to_string());
            let then = store.get("k").map_err(|e| e.to_string());
            *store.db.write().unwrap() = None;
            let written = store.apply(&record("k2", 2, Some("w"))).map(|a| a.changed);
            let _ = done.send((first, then, written.map_err(|e| e.to_string())));
        });
        let (first, then, written) = finished
            .recv_timeout(Duration::from_secs(60))
            .expect("the store hung after a failed reopen");
        let first = first.unwrap_err();
        assert!(
            first.contains("could not be reopened after a disk error"),
            "{first}"
        );
        assert_eq!(then.unwrap().unwrap().value.unwrap(), b"v");
        assert_eq!(written, Ok(true));
    }

    /// A database file deleted while the node runs, or another put in its
    /// place, takes no more writes: redb wrote on to the file it held open,
    /// every write acknowledged, and all of them gone at the next start.
    /// Reads go on from the file still open.
    #[test]
    fn a_database_file_deleted_or_replaced_while_running_takes_no_more_writes() {
        for replaced in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            store.apply(&record("k", 1, Some("v"))).unwrap();
            // The file itself, kept under another name, and a copy of it.
            let (kept, copy) = (dir.path().join("kept"), dir.path().join("copy"));
            std::fs::hard_link(store.path(), &kept).unwrap();
            std::fs::copy(store.path(), &copy).unwrap();
            std::fs::remove_file(store.path()).unwrap();
            if replaced {
                std::fs::rename(&copy, store.path()).unwrap();
            }
            for put_back in [false, true] {
                if put_back && !replaced {
                    // The very file put back: refused all the same, until a
                    // restart (status said so; what came between is unsure).
                    std::fs::rename(&kept, store.path()).unwrap();
                }
                let err = (store.apply(&record("k2", 2, Some("w"))))
                    .expect_err("a write to a database whose file is gone");
                assert!(
                    err.to_string()
                        .contains("was deleted or replaced while the node ran"),
                    "{err}"
                );
            }
            assert!(store.is_refused_for_good());
            assert_eq!(store.get("k").unwrap().unwrap().value.unwrap(), b"v");
            let status = store
                .writes_refused()
                .expect("status says writes are refused");
            assert!(
                status.starts_with("takes no more writes: its database file")
                    && status.contains("reads go on"),
                "{status}"
            );
        }
    }

    /// A database file deleted (or emptied) while the node runs is not
    /// reopened as a new, empty one, with the node serving on as if it held
    /// nothing: the store says so, and keeps saying so.
    #[test]
    fn a_database_file_gone_while_running_is_not_reopened_empty() {
        for emptied in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            store.apply(&record("k", 1, Some("v"))).unwrap();
            *store.db.write().unwrap() = None;
            match emptied {
                true => std::fs::write(store.path(), b"").unwrap(),
                false => std::fs::remove_file(store.path()).unwrap(),
            }
            for _ in 0..2 {
                let written = store.apply(&record("k2", 2, Some("w")));
                let err = written.expect_err("a write to a database whose file is gone");
                assert!(
                    err.to_string()
                        .contains("is gone, empty or replaced since the node started"),
                    "{err}"
                );
            }
            // Reads say so too, not that a reopen is tried again (none is:
            // each would fail, and log it), and so does the node's status.
            let read = store
                .get("k")
                .expect_err("a read of a database whose file is gone");
            assert!(
                read.to_string()
                    .contains("is gone, empty or replaced since the node started"),
                "{read}"
            );
            let status = store
                .writes_refused()
                .expect("status says writes are refused");
            assert!(
                status.starts_with("takes no more reads or writes: its database file"),
                "{status}"
            );
            assert_eq!(
                std::fs::metadata(store.path())
                    .map(|m| m.len())
                    .unwrap_or(0),
                0,
                "no new database was made"
            );
        }
    }

    /// Nor is another database file put in its place while the store was
    /// closed for a reopen (a backup moved there, another node's): the node
    /// served that file's keys as its own, saying it took writes again.
    #[test]
    fn a_database_file_replaced_while_closed_is_not_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.apply(&record("k", 1, Some("v"))).unwrap();
        *store.db.write().unwrap() = None;
        let other = tempfile::tempdir().unwrap();
        let others = Store::open(other.path()).unwrap();
        others.apply(&record("theirs", 1, Some("x"))).unwrap();
        drop(others);
        std::fs::rename(other.path().join(FILE_NAME), store.path()).unwrap();
        let err = (store.apply(&record("k2", 2, Some("w"))))
            .expect_err("a write to a database whose file was replaced");
        assert!(
            err.to_string().contains("is gone, empty or replaced"),
            "{err}"
        );
        assert!(store.get("theirs").is_err(), "another's keys served");
    }

    /// A file backend whose writes fail while `failing` is set, as on a full
    /// disk, and its fsyncs while `sync_failing` is: one failed commit stops
    /// redb's database until it is reopened.
    #[derive(Debug)]
    struct FailingWrites {
        file: redb::backends::FileBackend,
        failing: Arc<AtomicBool>,
        sync_failing: Arc<AtomicBool>,
    }

    impl redb::StorageBackend for FailingWrites {
        fn len(&self) -> std::io::Result<u64> {
            self.file.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.file.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.fail()?;
            self.file.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            if self.sync_failing.load(Ordering::Relaxed) {
                return Err(std::io::Error::from_raw_os_error(5)); // EIO
            }
            self.file.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.fail()?;
            self.file.write(offset, data)
        }
        fn close(&self) -> std::io::Result<()> {
            self.file.close()
        }
    }

    impl FailingWrites {
        /// A backend on the database file of `store`, whose own database is
        /// closed, with flags to make it fail.
        fn on(store: &Store) -> (Self, Arc<AtomicBool>, Arc<AtomicBool>) {
            *store.db.write().unwrap() = None;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(store.path())
                .unwrap();
            let (failing, sync_failing) = (Arc::default(), Arc::<AtomicBool>::default());
            let backend = FailingWrites {
                file: redb::backends::FileBackend::new(file).unwrap(),
                failing: Arc::clone(&failing),
                sync_failing: Arc::clone(&sync_failing),
            };
            (backend, failing, sync_failing)
        }

        fn fail(&self) -> std::io::Result<()> {
            match self.failing.load(Ordering::Relaxed) {
                true => Err(std::io::Error::from_raw_os_error(28)), // ENOSPC
                false => Ok(()),
            }
        }
    }

    /// After a disk error, with no write to come, reads alone bring the
    /// store back: the first that the cache cannot answer fails and has the
    /// database reopened. (Only a write did: a node that only its peers read
    /// from served from a stopped database until a client wrote to it.)
    #[test]
    fn after_a_disk_error_a_read_has_the_store_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Enough pages that the failed write below reads only some of them.
        let value = "v".repeat(1000);
        let records: Vec<Record> = (0..1000)
            .map(|i| record(&format!("a{i:04}"), 1, Some(&value)))
            .collect();
        store.apply_many(&records).unwrap();
        // The same file, behind a backend that can fail, with a cold cache
        // too small to hold what the reads below want.
        let (backend, failing, _) = FailingWrites::on(&store);
        let db = redb::Builder::new()
            .set_cache_size(16 * 1024)
            .create_with_backend(backend)
            .unwrap();
        *store.db.write().unwrap() = Some(Arc::new(db));

        failing.store(true, Ordering::Relaxed);
        let full = store.apply(&record("z", 2, Some("w"))).unwrap_err();
        assert!(
            full.to_string().contains("--data-dir is full")
                && full.to_string().contains("Free space there")
                && full.to_string().ends_with(REFUSED_TOO_LONG),
            "{full}"
        );
        failing.store(false, Ordering::Relaxed);

        let first = store.get("a0000").map_err(|e| e.to_string());
        assert!(
            first
                .as_ref()
                .is_err_and(|e| e.contains("a disk error stopped the database")),
            "{first:?}"
        );
        let then = store.get("a0000").unwrap().expect("a0000 is there");
        assert_eq!(then.value.unwrap(), value.as_bytes());
        assert_eq!(store.len().unwrap(), 1000, "the failed write left nothing");
    }

    /// A reopen that failed is not tried again by each write queued behind it
    /// (each waited its turn and tried for seconds), but a second later.
    #[test]
    fn a_reopen_that_failed_is_not_tried_again_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.apply(&record("k", 1, Some("v"))).unwrap();
        *store.db.write().unwrap() = None;
        let good = std::fs::read(store.path()).unwrap();
        std::fs::write(store.path(), b"no database, but not empty either").unwrap();
        let first = store
            .apply(&record("k", 2, Some("w")))
            .unwrap_err()
            .to_string();
        assert!(
            first.contains("could not be reopened after a disk error ("),
            "{first}"
        );
        let again = store
            .apply(&record("k", 3, Some("w")))
            .unwrap_err()
            .to_string();
        assert!(
            again.contains("a moment ago") && again.contains("at most once a second"),
            "{again}"
        );
        // A second on, with the file put right, the next write reopens it.
        std::fs::write(store.path(), &good).unwrap();
        a_second_on(&store);
        assert!(store.apply(&record("k", 4, Some("w"))).unwrap().changed);
    }

    /// As if the last reopen were a second ago: the next may be tried.
    fn a_second_on(store: &Store) {
        let mut reopened = store.reopened.lock().unwrap();
        let last = reopened.as_mut().expect("a reopen was made");
        last.at -= REOPEN_AGAIN_AFTER;
    }

    /// A database stopped again by the next disk error right after it was
    /// reopened (a disk that stays full) is not reopened by every write: the
    /// write is refused, and the database is reopened a second later.
    #[test]
    fn a_database_stopped_again_soon_after_a_reopen_waits_to_be_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.apply(&record("k", 1, Some("v"))).unwrap();
        let (backend, failing, _) = FailingWrites::on(&store);
        let db = redb::Builder::new().create_with_backend(backend).unwrap();
        *store.db.write().unwrap() = Some(Arc::new(db));
        // As if reopened a moment ago, after the disk filled up.
        *store.reopened.lock().unwrap() = Some(Reopened {
            at: Instant::now(),
            worked: true,
        });
        failing.store(true, Ordering::Relaxed);
        let full = store
            .apply(&record("k", 2, Some("w")))
            .unwrap_err()
            .to_string();
        assert!(full.contains("--data-dir is full"), "{full}");
        let refused = store
            .apply(&record("k", 3, Some("w")))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("again a moment after it was reopened"),
            "{refused}"
        );
        // The stopped database still answers from its cache.
        assert_eq!(store.get("k").unwrap().unwrap().value.unwrap(), b"v");
        // A second on, with room again, the next write reopens the file.
        failing.store(false, Ordering::Relaxed);
        a_second_on(&store);
        assert!(store.apply(&record("k", 4, Some("w"))).unwrap().changed);
    }

    /// After a failed fsync the store is not reopened (the kernel's copy of
    /// the file may hold what never reached the disk), and says why and what
    /// to do; a write that failed otherwise (above) is followed by a reopen.
    /// What the cache holds can still be read.
    #[test]
    fn after_a_failed_fsync_the_store_takes_no_more_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.apply(&record("k", 1, Some("v"))).unwrap();
        let (backend, _, sync_failing) = FailingWrites::on(&store);
        let watched = Watched {
            file: backend,
            path: store.path().to_path_buf(),
            fsync_failed: Arc::clone(&store.fsync_failed),
        };
        let db = redb::Builder::new().create_with_backend(watched).unwrap();
        *store.db.write().unwrap() = Some(Arc::new(db));
        assert_eq!(store.get("k").unwrap().unwrap().value.unwrap(), b"v");

        sync_failing.store(true, Ordering::Relaxed);
        // Said from the first: an fsync's error alone would not say it all.
        let failed = store.apply(&record("k", 2, Some("lost"))).unwrap_err();
        assert!(failed.to_string().contains("an fsync of"), "{failed}");
        sync_failing.store(false, Ordering::Relaxed);

        // Where a reopen would take it, every later write is refused.
        for wall_ms in [3, 4] {
            let refused = store
                .apply(&record("k", wall_ms, Some("w")))
                .expect_err("a write after a failed fsync was taken")
                .to_string();
            assert!(
                refused.contains("an fsync of")
                    && refused.contains(&store.path().display().to_string())
                    && refused.contains("Input/output error")
                    && refused.contains("restart the machine")
                    && refused.contains(
                        "longer than its --tombstone-grace, it must start with \
                                         an empty --data-dir"
                    ),
                "{refused}"
            );
        }
        let answer = store.get("k").map_err(|e| e.to_string());
        assert!(
            answer
                .as_ref()
                .is_ok_and(|r| r.as_ref().unwrap().value.as_deref() == Some(&b"v"[..]))
                || answer.as_ref().is_err_and(|e| e.contains("an fsync of")),
            "{answer:?}"
        );
        // With no database in the slot (the fsync failed in a reopen), a
        // read says why too, and asks for no reopen that would be refused.
        *store.db.write().unwrap() = None;
        let read = store.get("k").unwrap_err().to_string();
        assert!(read.contains("an fsync of"), "{read}");
        assert!(!store.reopen_asked.load(Ordering::Relaxed));
    }

    /// A damaged file stops the start with what to do about it, not only the
    /// decoder's or the database's words: a record that does not decode, and
    /// a file cut short.
    #[test]
    fn a_damaged_database_at_start_says_to_move_the_file_away() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.apply(&record("good", 1, Some("v"))).unwrap();
        // Written behind the store's back, as a flipped byte would leave it.
        let db = store.db.read().unwrap().clone().unwrap();
        let txn = db.begin_write().unwrap();
        let garbage = [0xff_u8, 0xff, 0xff];
        txn.open_table(RECORDS)
            .unwrap()
            .insert("bad", garbage.as_slice())
            .unwrap();
        txn.commit().unwrap();
        drop((db, store));
        let err = Store::open_and_scan(dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "cannot use data directory {}: its database clusterlab.redb is damaged (record \
                 for key \"bad\" is corrupt",
                dir.path().display()
            )) && err.contains("move clusterlab.redb away (and keep it) and start the node again"),
            "{err}"
        );

        let file = dir.path().join(FILE_NAME);
        let len = std::fs::metadata(&file).unwrap().len();
        let cut = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        cut.set_len(len / 2).unwrap();
        drop(cut);
        let err = Store::open_and_scan(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("its database clusterlab.redb is damaged ("),
            "{err}"
        );
    }

    fn record(key: &str, wall_ms: u64, value: Option<&str>) -> Record {
        Record {
            key: key.into(),
            version: Version::at(wall_ms),
            value: value.map(|v| v.as_bytes().to_vec()),
            request_id: String::new(),
        }
    }

    #[test]
    fn the_highest_version_wins_whatever_the_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.apply(&record("k", 2, Some("new"))).unwrap().changed);
        let late_old_write = store.apply(&record("k", 1, Some("old"))).unwrap();
        assert!(!late_old_write.changed);
        assert_eq!(late_old_write.stored, Version::at(2));
        assert_eq!(store.get("k").unwrap().unwrap().value.unwrap(), b"new");
    }

    #[test]
    fn a_version_already_standing_for_another_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = record("k", 2, Some("first"));
        store.apply(&first).unwrap();
        // The same write again (a retry, read repair, handoff): nothing to do.
        let again = store.apply(&first).unwrap();
        assert!(!again.changed);
        assert_eq!(again.stored, Version::at(2));
        // Another write stamped alike: refused, so it is never acknowledged
        // as stored while the disk holds the first.
        for other in [
            record("k", 2, Some("second")),
            record("k", 2, None),
            Record {
                request_id: "another".into(),
                ..first.clone()
            },
        ] {
            let refused = store.apply(&other).unwrap_err();
            assert!(
                matches!(&refused, Error::Aborted(m) if m.starts_with(
                    "version 2.0@n1 of \"k\" already stands for another write"
                )),
                "{refused}"
            );
        }
        assert_eq!(store.get("k").unwrap(), Some(first));
    }

    #[test]
    fn a_record_is_removed_only_while_it_is_at_the_version_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.apply(&record("handed", 1, Some("v"))).unwrap();
        store.apply(&record("rewritten", 2, Some("newer"))).unwrap();
        let named = [
            ("handed".to_string(), Version::at(1)),
            ("rewritten".to_string(), Version::at(1)),
            ("absent".to_string(), Version::at(1)),
        ];
        assert_eq!(store.remove_if_at(&named).unwrap(), 1);
        assert_eq!(store.get("handed").unwrap(), None);
        assert_eq!(
            store.get("rewritten").unwrap().unwrap().value.unwrap(),
            b"newer"
        );
    }

    #[test]
    fn tombstones_hide_values_from_scans_but_keep_their_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (k, v) in [("a/1", "x"), ("a/2", "y"), ("b/1", "z")] {
            store.apply(&record(k, 1, Some(v))).unwrap();
        }
        store.apply(&record("a/1", 2, None)).unwrap();
        let (found, more) = store.scan("a/", "", 10, false).unwrap();
        assert_eq!(
            found.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            ["a/2"]
        );
        assert!(!more);
        assert_eq!(store.get("a/1").unwrap().unwrap().version, Version::at(2));
        assert_eq!(store.len().unwrap(), 3);
    }

    #[test]
    fn apply_many_keeps_the_newest_of_each_key_in_one_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.apply(&record("a", 5, Some("current"))).unwrap();
        let batch = [record("a", 3, Some("older")), record("b", 1, None)];
        assert_eq!(store.apply_many(&batch).unwrap(), 1);
        assert_eq!(store.get("a").unwrap().unwrap().value.unwrap(), b"current");
        let mut seen = Vec::new();
        store
            .for_each(|r| {
                seen.push((r.key, r.value.is_none()));
                true
            })
            .unwrap();
        assert_eq!(seen, [("a".to_string(), false), ("b".to_string(), true)]);
        let (with_tombstones, _) = store.scan("", "", 10, true).unwrap();
        assert_eq!(with_tombstones.len(), 2);
    }

    #[test]
    fn scan_pages_with_limit_and_start_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for k in ["k1", "k2", "k3"] {
            store.apply(&record(k, 1, Some("v"))).unwrap();
        }
        let (page, more) = store.scan("", "", 2, false).unwrap();
        assert_eq!(page.len(), 2);
        assert!(more);
        let (rest, more) = store.scan("", &page[1].key, 2, false).unwrap();
        assert_eq!(
            rest.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            ["k3"]
        );
        assert!(!more);
    }

    /// Five values of 900 KB: a page holds two (1.8 MB), not the ten asked
    /// for, and says there is more; paging with `start_after` gets every one.
    #[test]
    fn a_page_of_large_values_ends_at_the_byte_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let large = "v".repeat(900_000);
        for k in ["k1", "k2", "k3", "k4", "k5"] {
            store.apply(&record(k, 1, Some(&large))).unwrap();
        }
        let mut pages = Vec::new();
        let mut after = String::new();
        loop {
            let (page, more) = store.scan("", &after, 10, false).unwrap();
            let size: usize = page.iter().map(Record::size).sum();
            assert!(size <= limits::MAX_SCAN_BYTES, "a page of {size} bytes");
            pages.push(page.iter().map(|r| r.key.clone()).collect::<Vec<_>>());
            after = page.last().unwrap().key.clone();
            if !more {
                break;
            }
        }
        assert_eq!(pages, [vec!["k1", "k2"], vec!["k3", "k4"], vec!["k5"]]);
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path())
            .unwrap()
            .apply(&record("k", 1, Some("v")))
            .unwrap();
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.get("k").unwrap().unwrap().value.unwrap(), b"v");
    }

    #[test]
    fn the_highest_version_counts_tombstones_and_every_node() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.highest_version().unwrap(), None);
        store.apply(&record("a", 5, Some("v"))).unwrap();
        store.apply(&record("b", 9, None)).unwrap();
        let mut from_n2 = record("c", 9, Some("v"));
        from_n2.version.node = "n2".into();
        store.apply(&from_n2).unwrap();
        store.apply(&record("d", 7, Some("v"))).unwrap();
        assert_eq!(store.highest_version().unwrap(), Some(from_n2.version));
    }

    #[test]
    fn only_tombstones_older_than_the_cutoff_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.apply(&record("old-tombstone", 5, None)).unwrap();
        store.apply(&record("young-tombstone", 10, None)).unwrap();
        store.apply(&record("old-value", 5, Some("v"))).unwrap();
        assert_eq!(
            store
                .collect_tombstones(10, &CancellationToken::new())
                .unwrap(),
            1
        );
        assert_eq!(store.get("old-tombstone").unwrap(), None);
        assert!(store.get("young-tombstone").unwrap().is_some());
        assert!(store.get("old-value").unwrap().is_some());
        assert_eq!(
            store
                .collect_tombstones(10, &CancellationToken::new())
                .unwrap(),
            0
        );
        // Collected for good: reopening does not bring it back.
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.len().unwrap(), 2);
    }

    /// A collection for a node that is stopping stops: it read the whole
    /// store, and deleted, after "node stopped".
    #[test]
    fn a_collection_abandoned_collects_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.apply(&record("old-tombstone", 5, None)).unwrap();
        let abandoned = CancellationToken::new();
        abandoned.cancel();
        assert_eq!(store.collect_tombstones(10, &abandoned).unwrap(), 0);
        assert!(store.get("old-tombstone").unwrap().is_some());
    }

    /// A mass delete's tombstones go a batch per transaction, every one.
    #[test]
    fn more_tombstones_than_a_batch_are_all_collected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let records: Vec<Record> = (0..COLLECT_BATCH * 2 + 1)
            .map(|i| record(&format!("k{i:05}"), 5, None))
            .collect();
        assert_eq!(store.apply_many(&records).unwrap(), records.len());
        store.apply(&record("value", 5, Some("v"))).unwrap();
        assert_eq!(
            store
                .collect_tombstones(10, &CancellationToken::new())
                .unwrap(),
            records.len() as u64
        );
        assert_eq!(store.len().unwrap(), 1);
    }

    #[test]
    fn a_file_for_a_data_directory_is_named_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        std::fs::write(&file, b"not a directory").unwrap();
        let err = Store::open(&file).unwrap_err().to_string();
        assert!(
            err.ends_with("data: it is a file; give --data-dir a directory (made if missing)"),
            "{err}"
        );
    }

    #[test]
    fn a_file_in_the_way_or_in_place_of_the_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, b"not a directory").unwrap();
        let err = Store::open(&file.join("n1")).unwrap_err().to_string();
        assert!(
            err.ends_with(&format!(
                "{} is a file, so no directory can be made in it; give --data-dir a directory \
                 (made if missing)",
                file.display()
            )),
            "{err}"
        );
        std::fs::write(dir.path().join(FILE_NAME), b"some other file").unwrap();
        let err = Store::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "cannot use data directory {}: clusterlab.redb in it is not a clusterlab-node \
                 database (",
                dir.path().display()
            )) && err.ends_with("move it away, or give --data-dir another directory"),
            "{err}"
        );
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir(other.path().join(FILE_NAME)).unwrap();
        let err = Store::open(other.path()).unwrap_err().to_string();
        assert!(
            err.contains("clusterlab.redb in it is a directory (")
                && err.contains("where the database file goes; move it away"),
            "{err}"
        );
    }

    /// A directory that cannot be made, for a reason of the machine's, is
    /// named with what to do.
    #[test]
    fn a_directory_that_cannot_be_made_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let too_long = dir.path().join("d".repeat(300));
        let err = Store::open(&too_long).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "cannot use data directory {}: ",
                too_long.display()
            )) && err.ends_with("; give --data-dir another"),
            "{err}"
        );
    }

    #[test]
    fn a_second_opener_gets_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot use data directory {}: another process has its database open (most \
                 likely another clusterlab-node given this --data-dir); stop it, or give \
                 --data-dir another directory",
                dir.path().display()
            )
        );
    }
}
