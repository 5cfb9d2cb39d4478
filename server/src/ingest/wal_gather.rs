//! A SQLite VFS for the writer's connection that hands the WAL frames of a commit to the
//! kernel in 64 KiB writes instead of two writes a page.
//!
//! SQLite writes each WAL frame as two `pwrite` calls, the 24-byte frame header and then the
//! page, each page at an offset 24 bytes past a 4 KiB boundary. With single fixes from many
//! members a commit is a few dozen pages; profiled on two cores, those calls were a third of
//! the writer's time (the system call, and the kernel's work per file page, of which an
//! unaligned 8 KiB write touches three). This VFS wraps the platform's default one and, for
//! WAL files only, gathers consecutive writes in memory and writes them out in 64 KiB
//! blocks before anything that could observe them: a read, a size query, a truncation, a
//! file control, closing, and above all the sync that makes a commit durable.
//!
//! That last point is the condition of its use. With `synchronous = FULL` SQLite syncs the
//! WAL before it publishes a commit in the WAL index, so every frame another connection can
//! be pointed at has been written. With `NORMAL` it publishes without a sync, so the writer
//! uses this VFS only with `FULL` (see [`super::sqlite::open`]). Frames not yet written when
//! the process dies belong to a commit that had not been acknowledged, as frames in the
//! kernel's page cache are lost when the machine dies before the sync.

use std::{
    ffi::{CStr, c_int, c_void},
    mem::size_of,
    ptr,
    sync::OnceLock,
};

use rusqlite::ffi;

/// The name the VFS is registered under.
pub const NAME: &CStr = c"patrol-wal-gather";

/// Bytes gathered before they are written out regardless (a commit of 4,000 rows is a few
/// MiB of frames).
const MAX_GATHERED: usize = 8 << 20;

/// Bytes a write hands the wrapped VFS at most (which takes up to 128 KiB).
const WRITE_BLOCK: usize = 64 << 10;

/// The VFS this one wraps (the default at registration).
struct Inner(*mut ffi::sqlite3_vfs);
// SAFETY: a registered sqlite3_vfs is immutable and lives for the process; SQLite's own
// methods on it are thread-safe.
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}

static INNER: OnceLock<Result<Inner, c_int>> = OnceLock::new();

/// One open file: the wrapped VFS's file follows it in the same allocation.
#[repr(C)]
struct File {
    /// Must be first: SQLite sees a `sqlite3_file`.
    base: ffi::sqlite3_file,
    /// The wrapped file.
    real: *mut ffi::sqlite3_file,
    /// Whether this is a WAL file (the only kind whose writes are gathered).
    wal: bool,
    /// Offset of the first gathered byte.
    start: i64,
    /// Gathered bytes, to be written at `start`.
    gathered: Vec<u8>,
}

/// Where the wrapped file starts inside the allocation SQLite gives `xOpen`.
const REAL_OFFSET: usize = size_of::<File>().next_multiple_of(16);

/// Registers the VFS (once per process; later calls return the first result).
pub fn register() -> Result<(), String> {
    let result = INNER.get_or_init(|| {
        // SAFETY: plain SQLite API calls; the new sqlite3_vfs is leaked, so it outlives
        // every connection that uses it, as SQLite requires.
        unsafe {
            let rc = ffi::sqlite3_initialize();
            if rc != ffi::SQLITE_OK {
                return Err(rc);
            }
            let inner = ffi::sqlite3_vfs_find(ptr::null());
            if inner.is_null() {
                return Err(ffi::SQLITE_ERROR);
            }
            let mut vfs: ffi::sqlite3_vfs = ptr::read(inner);
            vfs.szOsFile = c_int::try_from(REAL_OFFSET).unwrap_or(c_int::MAX) + (*inner).szOsFile;
            vfs.pNext = ptr::null_mut();
            vfs.zName = NAME.as_ptr();
            vfs.xOpen = Some(x_open);
            // Every other method is the wrapped VFS's own; they see the same pAppData.
            let rc = ffi::sqlite3_vfs_register(Box::into_raw(Box::new(vfs)), 0);
            if rc != ffi::SQLITE_OK {
                return Err(rc);
            }
            Ok(Inner(inner))
        }
    });
    result
        .as_ref()
        .map(|_| ())
        .map_err(|rc| format!("registering the SQLite VFS {NAME:?}: error {rc}"))
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(Ok(Inner(inner))) = INNER.get() else {
        return ffi::SQLITE_ERROR;
    };
    let Some(open) = (unsafe { (**inner).xOpen }) else {
        return ffi::SQLITE_ERROR;
    };
    let f = file.cast::<File>();
    // SAFETY: SQLite allocated szOsFile bytes at `file`: the File, then the wrapped file.
    let real = unsafe { file.cast::<u8>().add(REAL_OFFSET) }.cast::<ffi::sqlite3_file>();
    let rc = unsafe { open(*inner, name, real, flags, out_flags) };
    if rc != ffi::SQLITE_OK || unsafe { (*real).pMethods.is_null() } {
        // SQLite calls no method of a file whose open failed; it checks pMethods.
        unsafe { (*f).base.pMethods = ptr::null() };
        if rc == ffi::SQLITE_OK {
            return ffi::SQLITE_CANTOPEN;
        }
        return rc;
    }
    // SAFETY: `f` is ours to initialise; dropped in x_close.
    unsafe {
        ptr::write(
            f,
            File {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                real,
                wal: flags & ffi::SQLITE_OPEN_WAL != 0,
                start: 0,
                gathered: Vec::new(),
            },
        );
    }
    ffi::SQLITE_OK
}

/// The file behind SQLite's pointer.
///
/// # Safety
/// `file` must have been opened by [`x_open`] and not yet closed.
unsafe fn this<'a>(file: *mut ffi::sqlite3_file) -> &'a mut File {
    unsafe { &mut *file.cast::<File>() }
}

/// The wrapped file's methods.
fn real_methods(f: &File) -> &'static ffi::sqlite3_io_methods {
    // SAFETY: the wrapped file was opened successfully, so pMethods is set and static.
    unsafe { &*(*f.real).pMethods }
}

/// Writes out what is gathered.
fn flush(f: &mut File) -> c_int {
    if f.gathered.is_empty() {
        return ffi::SQLITE_OK;
    }
    let Some(write) = real_methods(f).xWrite else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let mut rc = ffi::SQLITE_OK;
    let mut done = 0;
    while done < f.gathered.len() && rc == ffi::SQLITE_OK {
        // The unix VFS writes at most 128 KiB a call; blocks end on WRITE_BLOCK boundaries
        // of the file.
        let at = f.start + done as i64;
        let to_boundary = WRITE_BLOCK - (at as u64 % WRITE_BLOCK as u64) as usize;
        let n = to_boundary.min(f.gathered.len() - done);
        // SAFETY: `n` bytes from `done` lie within the buffer, which outlives the call.
        rc = unsafe { write(f.real, f.gathered[done..].as_ptr().cast(), n as c_int, at) };
        done += n;
    }
    f.gathered.clear();
    rc
}

/// Flushes (for WAL files) and then runs `then`.
fn flushed(f: &mut File, then: impl FnOnce(&mut File) -> c_int) -> c_int {
    if f.wal {
        let rc = flush(f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    then(f)
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    let f = unsafe { this(file) };
    let flushed = flush(f);
    let closed = match real_methods(f).xClose {
        Some(close) => unsafe { close(f.real) },
        None => ffi::SQLITE_OK,
    };
    // SAFETY: initialised in x_open; SQLite never uses the file after xClose.
    unsafe { ptr::drop_in_place(f) };
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let f = unsafe { this(file) };
    flushed(f, |f| match real_methods(f).xRead {
        Some(read) => unsafe { read(f.real, buf, amount, offset) },
        None => ffi::SQLITE_IOERR_READ,
    })
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let f = unsafe { this(file) };
    let Some(write) = real_methods(f).xWrite else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let Ok(len) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    if !f.wal {
        return unsafe { write(f.real, buf, amount, offset) };
    }
    let end = f.start + f.gathered.len() as i64;
    if !f.gathered.is_empty() && offset != end {
        // Not a continuation (a new WAL header, a rewritten checksum): write out first.
        let rc = flush(f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if f.gathered.is_empty() {
        f.start = offset;
    }
    // SAFETY: SQLite passes `amount` readable bytes at `buf`.
    f.gathered
        .extend_from_slice(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) });
    if f.gathered.len() >= MAX_GATHERED {
        return flush(f);
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    let f = unsafe { this(file) };
    flushed(f, |f| match real_methods(f).xTruncate {
        Some(truncate) => unsafe { truncate(f.real, size) },
        None => ffi::SQLITE_IOERR_TRUNCATE,
    })
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    let f = unsafe { this(file) };
    flushed(f, |f| match real_methods(f).xSync {
        Some(sync) => unsafe { sync(f.real, flags) },
        None => ffi::SQLITE_IOERR_FSYNC,
    })
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    let f = unsafe { this(file) };
    flushed(f, |f| match real_methods(f).xFileSize {
        Some(file_size) => unsafe { file_size(f.real, size) },
        None => ffi::SQLITE_IOERR_FSTAT,
    })
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let f = unsafe { this(file) };
    match real_methods(f).xLock {
        Some(lock) => unsafe { lock(f.real, level) },
        None => ffi::SQLITE_OK,
    }
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let f = unsafe { this(file) };
    match real_methods(f).xUnlock {
        Some(unlock) => unsafe { unlock(f.real, level) },
        None => ffi::SQLITE_OK,
    }
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    let f = unsafe { this(file) };
    match real_methods(f).xCheckReservedLock {
        Some(check) => unsafe { check(f.real, out) },
        None => {
            unsafe { *out = 0 };
            ffi::SQLITE_OK
        }
    }
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    let f = unsafe { this(file) };
    flushed(f, |f| match real_methods(f).xFileControl {
        Some(control) => unsafe { control(f.real, op, arg) },
        None => ffi::SQLITE_NOTFOUND,
    })
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let f = unsafe { this(file) };
    match real_methods(f).xSectorSize {
        Some(sector_size) => unsafe { sector_size(f.real) },
        None => 4096,
    }
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let f = unsafe { this(file) };
    match real_methods(f).xDeviceCharacteristics {
        Some(characteristics) => unsafe { characteristics(f.real) },
        None => 0,
    }
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    page_size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let f = unsafe { this(file) };
    match real_methods(f).xShmMap {
        Some(map) => unsafe { map(f.real, page, page_size, extend, out) },
        None => ffi::SQLITE_IOERR_SHMMAP,
    }
}

unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    let f = unsafe { this(file) };
    match real_methods(f).xShmLock {
        Some(lock) => unsafe { lock(f.real, offset, n, flags) },
        None => ffi::SQLITE_IOERR_SHMLOCK,
    }
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    let f = unsafe { this(file) };
    if let Some(barrier) = real_methods(f).xShmBarrier {
        unsafe { barrier(f.real) }
    }
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    let f = unsafe { this(file) };
    match real_methods(f).xShmUnmap {
        Some(unmap) => unsafe { unmap(f.real, delete) },
        None => ffi::SQLITE_OK,
    }
}

unsafe extern "C" fn x_fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let f = unsafe { this(file) };
    flushed(f, |f| match real_methods(f).xFetch {
        Some(fetch) => unsafe { fetch(f.real, offset, amount, out) },
        None => {
            unsafe { *out = ptr::null_mut() };
            ffi::SQLITE_OK
        }
    })
}

unsafe extern "C" fn x_unfetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    page: *mut c_void,
) -> c_int {
    let f = unsafe { this(file) };
    match real_methods(f).xUnfetch {
        Some(unfetch) => unsafe { unfetch(f.real, offset, page) },
        None => ffi::SQLITE_OK,
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags, params};

    use super::*;

    fn writer(path: &std::path::Path) -> Connection {
        register().unwrap();
        let conn = Connection::open_with_flags_and_vfs(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            NAME,
        )
        .unwrap();
        conn.execute_batch(
            "PRAGMA page_size = 8192; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 1048576;",
        )
        .unwrap();
        conn
    }

    /// Rows and bytes as a connection sees them.
    fn totals(conn: &Connection) -> (i64, i64) {
        conn.query_row(
            "SELECT count(*), coalesce(sum(length(v)), 0) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    /// What a process opening the files as they are now would find (as after a crash: the
    /// database and WAL files, no WAL index).
    fn as_on_disk(path: &std::path::Path) -> (i64, i64) {
        let copy = tempfile::tempdir().unwrap();
        let to = copy.path().join("copy.db");
        std::fs::copy(path, &to).unwrap();
        let wal = path.with_extension("db-wal");
        if wal.exists() {
            std::fs::copy(&wal, copy.path().join("copy.db-wal")).unwrap();
        }
        let conn = Connection::open(&to).unwrap();
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        totals(&conn)
    }

    #[test]
    fn every_commit_is_on_disk_and_visible_to_other_connections_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut w = writer(&path);
        w.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, k BLOB UNIQUE, v BLOB)")
            .unwrap();
        let reader = Connection::open(&path).unwrap();
        let mut expected = (0i64, 0i64);
        // Sizes from one row to more than MAX_GATHERED bytes of frames in one commit.
        let sizes = [1usize, 7, 300, 1, 2500, 40, 4000, 3, 900];
        for (round, &rows) in sizes.iter().cycle().take(27).enumerate() {
            let txn = w.transaction().unwrap();
            {
                let mut insert = txn.prepare("INSERT INTO t (k, v) VALUES (?1, ?2)").unwrap();
                for i in 0..rows {
                    let len = 100 + (i * 37 + round * 11) % 2900;
                    let key = uuid::Uuid::new_v4();
                    insert
                        .execute(params![key.as_bytes().as_slice(), vec![round as u8; len]])
                        .unwrap();
                    expected.0 += 1;
                    expected.1 += len as i64;
                }
            }
            txn.commit().unwrap();
            assert_eq!(totals(&reader), expected, "round {round}");
            if round % 9 == 4 {
                assert_eq!(as_on_disk(&path), expected, "round {round}");
            }
            if round % 9 == 8 {
                // A checkpoint by another connection; the writer then starts the WAL over.
                reader
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .unwrap();
            }
        }
        // A rolled-back transaction leaves nothing behind.
        let txn = w.transaction().unwrap();
        txn.execute("INSERT INTO t (k, v) VALUES (x'00', zeroblob(100000))", [])
            .unwrap();
        txn.rollback().unwrap();
        assert_eq!(totals(&reader), expected);
        assert_eq!(totals(&w), expected);
        drop(w);
        assert_eq!(as_on_disk(&path), expected);
    }
}
