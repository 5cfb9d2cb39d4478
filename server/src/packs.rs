//! Packed hours of fixes on a SQLite file.
//!
//! A coverage pass over a past day (a rebuild, the updater after late fixes) reads every fix
//! of the day recorded near a post or by someone on duty. Read from an index, a day of
//! eleven thousand phones is 31.7 M entries of about 80 bytes, on pages scattered through
//! the file among the other trees' pages, each read from disk on its own (on SQLite fixes
//! are indexed by member, then time: see `m20261206_000009_fixes_by_member`). So once
//! an hour is [`PACK_AFTER`] behind and nothing has been written into it for
//! [`PACK_EVERY`], the packer (a task of `patrol serve`) writes for each
//! member who reported in it one row of `fix_packs`: the five columns the rule reads of
//! the member's fixes in that hour, exactly (times to the nanosecond, the three numbers as
//! stored), about 30 bytes a fix, in rows written one after another. A pass then reads a
//! packed hour as eleven thousand blobs in one stretch of the file.
//!
//! The fixes table stays the record; packs are a copy kept true by everything in the service
//! that writes fixes. The check-in writer marks a member's hour in `fix_packs_dirty`
//! whenever it stores a fix of a packed hour (a phone syncing late), in the same
//! transaction ([`mark_written`]); a reader takes that member's fixes of that hour from the
//! table instead, in the same snapshot, until the packer packs them again. Fixes written
//! while an hour is being packed are found by their rowid (the table's rowids only grow)
//! and marked the same way. Retention moves the packed range forward before it deletes
//! fixes ([`forget_before_on`]), and the demo forgets every pack before it writes its week
//! ([`forget_all_on`]). Anything else that changes fixes (an operator with `sqlite3`) must
//! do as the demo does, after which the packer packs every hour again.
//!
//! On PostgreSQL, and on an in-memory SQLite database, there are no packs: coverage reads
//! the fixes themselves.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rustc_hash::{FxHashMap, FxHashSet};
use uuid::Uuid;

use crate::sqlite_reads::{parse_time, time, uuid_of};

/// Seconds in an hour, the unit of packing.
pub const HOUR_S: i64 = 3600;
/// An hour is packed once it ended this long ago: by then nearly every phone has sent it,
/// and coverage of shifts that ended in it has settled (see [`crate::coverage::settled`]).
pub const PACK_AFTER: chrono::Duration = chrono::Duration::hours(2);
/// How often the packer looks for an hour to pack or a marked one to pack again, when the
/// last look found nothing to do; also how long an hour, or a marked member-hour, must have
/// been left alone before it is packed.
pub const PACK_EVERY: Duration = Duration::from_secs(30);
/// Page cache of the packer's writing connection, in KiB.
pub const CACHE_KIB: i64 = 8 * 1024;
/// Marks a member's hour out of date, or updates when it last was.
const MARK: &str = "INSERT INTO fix_packs_dirty (hour, member_id, marked_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT (hour, member_id) DO UPDATE SET marked_at = excluded.marked_at";
/// Fixes read in one transaction when packing marked member-hours again.
const REPACK_MAX_FIXES: usize = 20_000;
/// Bytes of packs written in one transaction.
const WRITE_CHUNK_BYTES: usize = 2 << 20;
/// Marked member-hours packed again in one transaction.
const REPACK_BATCH: usize = 200;

/// What a pack keeps of a fix: `recorded_at`, `lat`, `lon`, `accuracy_m`, `flags`.
pub type Packed = (DateTime<Utc>, f64, f64, f64, i32);

/// The hour (since the Unix epoch) that holds `t`.
pub fn hour_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(HOUR_S)
}

/// The start of hour `h`.
pub fn hour_start(h: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(h * HOUR_S, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

fn get_f64(b: &[u8], at: &mut usize) -> Option<f64> {
    let bytes: [u8; 8] = b.get(*at..*at + 8)?.try_into().ok()?;
    *at += 8;
    Some(f64::from_le_bytes(bytes))
}

/// The order fixes are packed in: by time, then by the rest, so that a pack of the same
/// fixes is the same bytes whatever order they were read in.
fn order(a: &Packed, b: &Packed) -> std::cmp::Ordering {
    a.0.cmp(&b.0)
        .then(a.1.total_cmp(&b.1))
        .then(a.2.total_cmp(&b.2))
        .then(a.3.total_cmp(&b.3))
        .then(a.4.cmp(&b.4))
}

/// Packs one member's fixes of hour `hour` (each must lie in it): per fix, in time order,
/// the nanoseconds since the previous one (the first: since the hour's start) and the flags
/// as varints, then latitude, longitude and accuracy as little-endian `f64`.
pub fn encode(hour: i64, fixes: &mut [Packed]) -> Vec<u8> {
    fixes.sort_unstable_by(order);
    let mut out = Vec::with_capacity(fixes.len() * 30);
    let mut prev = nanos(hour_start(hour));
    for &(t, lat, lon, accuracy_m, flags) in fixes.iter() {
        let n = nanos(t);
        put_varint(&mut out, n.saturating_sub(prev).max(0) as u64);
        prev = n;
        put_varint(&mut out, u64::from(flags as u32));
        out.extend_from_slice(&lat.to_le_bytes());
        out.extend_from_slice(&lon.to_le_bytes());
        out.extend_from_slice(&accuracy_m.to_le_bytes());
    }
    out
}

/// Unpacks what [`encode`] packed, in time order; `None` if the bytes are not a pack.
pub fn decode(hour: i64, b: &[u8], mut each: impl FnMut(Packed)) -> Option<()> {
    let mut at = 0;
    let mut prev = nanos(hour_start(hour));
    while at < b.len() {
        let delta = i64::try_from(get_varint(b, &mut at)?).ok()?;
        prev = prev.checked_add(delta)?;
        let flags = u32::try_from(get_varint(b, &mut at)?).ok()? as i32;
        let lat = get_f64(b, &mut at)?;
        let lon = get_f64(b, &mut at)?;
        let accuracy_m = get_f64(b, &mut at)?;
        each((
            DateTime::from_timestamp_nanos(prev),
            lat,
            lon,
            accuracy_m,
            flags,
        ));
    }
    Some(())
}

fn corrupt(hour: i64, member: Uuid) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        2,
        rusqlite::types::Type::Blob,
        format!("the pack of member {member} for hour {hour} is not a pack").into(),
    )
}

/// The hours packed so far, `[from, until)`.
pub fn packed_range(conn: &Connection) -> rusqlite::Result<Option<(i64, i64)>> {
    conn.prepare_cached("SELECT from_hour, until_hour FROM fix_packs_range WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

const RAW_OF_MEMBER: &str = "SELECT recorded_at, lat, lon, accuracy_m, flags FROM fixes \
     WHERE member_id = ?1 AND recorded_at >= ?2 AND recorded_at < ?3";

fn raw_of_member(
    conn: &Connection,
    member: &Uuid,
    a: DateTime<Utc>,
    b: DateTime<Utc>,
    mut each: impl FnMut(Packed),
) -> rusqlite::Result<()> {
    let mut select = conn.prepare_cached(RAW_OF_MEMBER)?;
    let mut rows = select.query(params![member.as_bytes(), time(a), time(b)])?;
    while let Some(r) = rows.next()? {
        each((
            parse_time(r.get_ref(0)?.as_str()?)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
        ));
    }
    Ok(())
}

/// Reads the fixes recorded in `[a, b)`, which must lie within one hour, from that hour's
/// packs, handing each to `each` with its member, if the hour is packed; the fixes of
/// members whose packs are out of date are read from the table. Answers whether the hour
/// was packed (if not, nothing was read). Call it inside a transaction, so that packs, marks
/// and table are read as of one moment.
pub fn read_packed(
    conn: &Connection,
    a: DateTime<Utc>,
    b: DateTime<Utc>,
    mut each: impl FnMut(&Uuid, Packed),
) -> rusqlite::Result<bool> {
    let hour = hour_of(a);
    if b > hour_start(hour + 1) || b <= a {
        return Ok(false);
    }
    match packed_range(conn)? {
        Some((from, until)) if from <= hour && hour < until => {}
        _ => return Ok(false),
    }
    let mut dirty = FxHashSet::default();
    {
        let mut select =
            conn.prepare_cached("SELECT member_id FROM fix_packs_dirty WHERE hour = ?1")?;
        let mut rows = select.query([hour])?;
        while let Some(r) = rows.next()? {
            dirty.insert(uuid_of(r.get_ref(0)?.as_blob()?)?);
        }
    }
    let (a_n, b_n) = (nanos(a), nanos(b));
    let mut select =
        conn.prepare_cached("SELECT member_id, fixes FROM fix_packs WHERE hour = ?1")?;
    let mut rows = select.query([hour])?;
    while let Some(r) = rows.next()? {
        let member = uuid_of(r.get_ref(0)?.as_blob()?)?;
        if dirty.contains(&member) {
            continue;
        }
        decode(hour, r.get_ref(1)?.as_blob()?, |p| {
            let n = nanos(p.0);
            if n >= a_n && n < b_n {
                each(&member, p);
            }
        })
        .ok_or_else(|| corrupt(hour, member))?;
    }
    for member in &dirty {
        raw_of_member(conn, member, a, b, |p| each(member, p))?;
    }
    Ok(true)
}

/// Packs the hour after the packed ones (the hour of the oldest fix when none is packed
/// yet) if it ended [`PACK_AFTER`] before `now` and none of its fixes has a rowid above
/// `quiet_since` (an hour still being written, as when phones upload a backlog, is left
/// for later): [`read_hour`] on `read`, outside any lock, then [`write_hour`] on `write`.
/// Answers the hour packed.
pub fn pack_next(
    read: &Connection,
    write: &mut Connection,
    now: DateTime<Utc>,
    quiet_since: i64,
) -> rusqlite::Result<Option<i64>> {
    let range = packed_range(write)?;
    let hour = match range {
        Some((_, until)) => until,
        None => {
            let oldest: Option<String> = write
                // Each member's earliest fix, one seek of the index by member each.
                .prepare_cached(
                    "SELECT min((SELECT recorded_at FROM fixes WHERE member_id = m.id \
                     ORDER BY recorded_at LIMIT 1)) FROM members m",
                )?
                .query_row([], |r| r.get(0))?;
            match oldest {
                Some(t) => hour_of(parse_time(&t)?),
                None => return Ok(None),
            }
        }
    };
    if hour_start(hour + 1) > now - PACK_AFTER {
        return Ok(None);
    }
    let Some(read) = read_hour(read, hour, quiet_since)? else {
        return Ok(None);
    };
    Ok(write_hour(write, range, read)?.then_some(hour))
}

/// An hour's fixes read and packed, not yet written.
pub struct HourRead {
    hour: i64,
    /// The largest rowid of the fixes table when the hour was read.
    seen: i64,
    packs: Vec<(Uuid, Vec<u8>)>,
}

/// Reads and packs the fixes of `hour`, in one snapshot; `None` if one of them has a rowid
/// above `quiet_since`.
pub fn read_hour(
    read: &Connection,
    hour: i64,
    quiet_since: i64,
) -> rusqlite::Result<Option<HourRead>> {
    let (a, b) = (time(hour_start(hour)), time(hour_start(hour + 1)));
    let mut by_member: FxHashMap<Uuid, Vec<Packed>> = FxHashMap::default();
    let tx = read.unchecked_transaction()?;
    let seen = last_rowid(&tx)?;
    {
        let mut select = tx.prepare_cached(
            "SELECT member_id, recorded_at, lat, lon, accuracy_m, flags, rowid FROM fixes \
             WHERE member_id IN (SELECT id FROM members) AND recorded_at >= ?1 \
             AND recorded_at < ?2",
        )?;
        let mut rows = select.query(params![a, b])?;
        while let Some(r) = rows.next()? {
            if r.get::<_, i64>(6)? > quiet_since {
                return Ok(None);
            }
            by_member
                .entry(uuid_of(r.get_ref(0)?.as_blob()?)?)
                .or_default()
                .push((
                    parse_time(r.get_ref(1)?.as_str()?)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ));
        }
    }
    tx.finish()?;
    let mut packs: Vec<(Uuid, Vec<u8>)> = by_member
        .into_iter()
        .map(|(m, mut fixes)| (m, encode(hour, &mut fixes)))
        .collect();
    packs.sort_unstable_by_key(|(m, _)| *m);
    Ok(Some(HourRead { hour, seen, packs }))
}

/// Writes the packs of an hour read by [`read_hour`] and adds the hour to the packed range,
/// if the range is still `range` (the one the hour follows); members with a fix of that
/// hour written since it was read are marked instead. The packs go in transactions of about
/// [`WRITE_CHUNK_BYTES`] (an hour not yet in the range is read by nobody), so that the
/// check-in writer never waits long for the lock; the last one checks the range, marks and
/// adds the hour. Answers whether it added the hour (not if another process packed or
/// purged meanwhile).
pub fn write_hour(
    write: &mut Connection,
    range: Option<(i64, i64)>,
    read: HourRead,
) -> rusqlite::Result<bool> {
    let HourRead { hour, seen, packs } = read;
    let (a, b) = (time(hour_start(hour)), time(hour_start(hour + 1)));
    let current = |c: &Connection| -> rusqlite::Result<bool> {
        Ok(packed_range(c)? == range && range.is_none_or(|(_, until)| until == hour))
    };
    let mut rest = &packs[..];
    let mut first = true;
    while first || !rest.is_empty() {
        let tx = write.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !current(&tx)? {
            return Ok(false);
        }
        if first {
            tx.execute("DELETE FROM fix_packs WHERE hour = ?1", [hour])?;
            tx.execute("DELETE FROM fix_packs_dirty WHERE hour = ?1", [hour])?;
            first = false;
        }
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO fix_packs (hour, member_id, fixes) VALUES (?1, ?2, ?3)",
        )?;
        let mut bytes = 0;
        while let Some(((m, blob), more)) = rest.split_first() {
            if bytes >= WRITE_CHUNK_BYTES {
                break;
            }
            insert.execute(params![hour, m.as_bytes(), blob])?;
            bytes += blob.len();
            rest = more;
        }
        drop(insert);
        tx.commit()?;
    }

    let tx = write.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !current(&tx)? {
        return Ok(false);
    }
    // Fixes of the hour written since it was read: a few seconds' worth of rows, found by
    // rowid (`NOT INDEXED` keeps SQLite off the index by member, which it would otherwise
    // scan whole for the DISTINCT). Their members' packs are passed over by readers until
    // packed again.
    {
        let mut select = tx.prepare_cached(
            "SELECT DISTINCT member_id FROM fixes NOT INDEXED \
             WHERE rowid > ?1 AND recorded_at >= ?2 AND recorded_at < ?3",
        )?;
        let late: Vec<Vec<u8>> = select
            .query_map(params![seen, a, b], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut mark = tx.prepare_cached(MARK)?;
        for m in &late {
            mark.execute(params![hour, m, Utc::now().timestamp()])?;
        }
    }
    tx.execute(
        "INSERT INTO fix_packs_range (id, from_hour, until_hour) VALUES (1, ?1, ?2) \
         ON CONFLICT (id) DO UPDATE SET until_hour = excluded.until_hour",
        params![hour, hour + 1],
    )?;
    tx.commit()?;
    Ok(true)
}

/// Packs again, in one transaction (so that no fix can be written between reading them and
/// writing the pack), up to [`REPACK_BATCH`] member-hours last marked out of date at or
/// before `marked_by` (seconds since the epoch), stopping once [`REPACK_MAX_FIXES`] fixes
/// were read. Answers how many.
pub fn repack_marked(write: &mut Connection, marked_by: i64) -> rusqlite::Result<usize> {
    let tx = write.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let marked: Vec<(i64, Uuid)> = {
        let mut select = tx.prepare_cached(
            "SELECT hour, member_id FROM fix_packs_dirty WHERE marked_at <= ?1 LIMIT ?2",
        )?;
        let rows = select.query_map(params![marked_by, REPACK_BATCH as i64], |r| {
            Ok((r.get(0)?, uuid_of(r.get_ref(1)?.as_blob()?)?))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut done = 0;
    let mut read = 0;
    for &(hour, member) in &marked {
        if read >= REPACK_MAX_FIXES {
            break;
        }
        let mut fixes = Vec::new();
        raw_of_member(&tx, &member, hour_start(hour), hour_start(hour + 1), |p| {
            fixes.push(p)
        })?;
        read += fixes.len();
        tx.prepare_cached("DELETE FROM fix_packs WHERE hour = ?1 AND member_id = ?2")?
            .execute(params![hour, member.as_bytes()])?;
        if !fixes.is_empty() {
            tx.prepare_cached(
                "INSERT INTO fix_packs (hour, member_id, fixes) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![hour, member.as_bytes(), encode(hour, &mut fixes)])?;
        }
        tx.prepare_cached("DELETE FROM fix_packs_dirty WHERE hour = ?1 AND member_id = ?2")?
            .execute(params![hour, member.as_bytes()])?;
        done += 1;
    }
    tx.commit()?;
    Ok(done)
}

/// Marks, inside the transaction that wrote them, the member-hours of fixes just written
/// whose hour is packed, so that readers take them from the table until they are packed
/// again. Answers how many fixes fell in packed hours.
pub fn mark_written<'a>(
    tx: &Connection,
    written: impl IntoIterator<Item = (&'a Uuid, DateTime<Utc>)>,
) -> rusqlite::Result<usize> {
    let Some((from, until)) = packed_range(tx)? else {
        return Ok(0);
    };
    let mut mark = tx.prepare_cached(MARK)?;
    let at = Utc::now().timestamp();
    let mut n = 0;
    for (member, t) in written {
        let hour = hour_of(t);
        if from <= hour && hour < until {
            mark.execute(params![hour, member.as_bytes(), at])?;
            n += 1;
        }
    }
    Ok(n)
}

/// The statements that drop the packs of the hours before `cutoff` and of the hour that holds
/// it, and move the packed range past them; run them before deleting the fixes recorded
/// before `cutoff` (the hour that holds it is then read from the table). SQLite only.
pub fn forget_before_on(cutoff: DateTime<Utc>) -> Vec<String> {
    let from = hour_of(cutoff) + 1;
    vec![
        format!("UPDATE fix_packs_range SET from_hour = {from} WHERE from_hour < {from}"),
        "UPDATE fix_packs_range SET until_hour = from_hour WHERE until_hour < from_hour".to_owned(),
        format!("DELETE FROM fix_packs WHERE hour < {from}"),
        format!("DELETE FROM fix_packs_dirty WHERE hour < {from}"),
    ]
}

/// The statements that forget every pack, after which the packer packs every hour again from
/// the oldest fix: for whoever writes fixes other than through the check-in writer. SQLite
/// only.
pub fn forget_all_on() -> Vec<String> {
    vec![
        "DELETE FROM fix_packs_range".to_owned(),
        "DELETE FROM fix_packs".to_owned(),
        "DELETE FROM fix_packs_dirty".to_owned(),
    ]
}

/// One round of the packer: the next hour that is due and quiet since `quiet_since` (a
/// rowid; `None`: pack no hour this round), else one batch of member-hours marked out of
/// date at least [`PACK_EVERY`] ago. Answers whether there may be more to do at once.
pub fn pack_round(
    read: &Connection,
    write: &mut Connection,
    now: DateTime<Utc>,
    quiet_since: Option<i64>,
) -> rusqlite::Result<bool> {
    if let Some(quiet_since) = quiet_since
        && let Some(hour) = pack_next(read, write, now, quiet_since)?
    {
        tracing::debug!(hour = %hour_start(hour), "packed an hour of fixes");
        return Ok(true);
    }
    let marked_by = now.timestamp() - PACK_EVERY.as_secs() as i64;
    let repacked = repack_marked(write, marked_by)?;
    if repacked > 0 {
        tracing::debug!(repacked, "packed marked member-hours again");
    }
    Ok(repacked > 0)
}

/// The largest rowid of the fixes table.
fn last_rowid(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row("SELECT coalesce(max(rowid), 0) FROM fixes", [], |r| {
        r.get(0)
    })
}

/// The packer's memory of how far the fixes table went, so that an hour is packed only once
/// nothing has been written into it for at least [`PACK_EVERY`].
#[derive(Default)]
struct Quiet {
    /// `(when, largest rowid then)`, oldest first.
    seen: std::collections::VecDeque<(std::time::Instant, i64)>,
}

impl Quiet {
    /// Notes the largest rowid now and answers the largest one at least [`PACK_EVERY`] ago.
    fn since(&mut self, last: i64) -> Option<i64> {
        let now = std::time::Instant::now();
        self.seen.push_back((now, last));
        let old = |(t, _): &(std::time::Instant, i64)| now.duration_since(*t) >= PACK_EVERY;
        while self.seen.len() > 1 && self.seen.get(1).is_some_and(old) {
            self.seen.pop_front();
        }
        self.seen.front().filter(|e| old(e)).map(|&(_, r)| r)
    }
}

/// The packer's two connections: one to read an hour, one to write its packs.
fn open_pair(options: &crate::ingest::sqlite::Options) -> anyhow::Result<(Connection, Connection)> {
    let write = crate::ingest::sqlite::open(options)?;
    let read = crate::sqlite_reads::open(
        &options.path,
        Duration::from_millis(options.busy_timeout_ms),
    )?;
    Ok((read, write))
}

/// Packs every hour due by `now` and every marked member-hour, on connections of its own;
/// answers the hours packed.
pub fn catch_up(
    options: &crate::ingest::sqlite::Options,
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let (read, mut write) = open_pair(options)?;
    let mut hours = 0;
    while pack_next(&read, &mut write, now, i64::MAX)?.is_some() {
        hours += 1;
    }
    while repack_marked(&mut write, i64::MAX)? > 0 {}
    Ok(hours)
}

/// Runs the packer on a SQLite file until the process ends: [`pack_round`] after round,
/// resting [`PACK_EVERY`] when a round finds nothing more to do.
pub fn spawn_packer(options: crate::ingest::sqlite::Options) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns: Option<(Connection, Connection)> = None;
        let quiet = std::sync::Arc::new(std::sync::Mutex::new(Quiet::default()));
        loop {
            let options = options.clone();
            let taken = conns.take();
            let quiet = quiet.clone();
            let step = tokio::task::spawn_blocking(move || {
                let (read, mut write) = match taken {
                    Some(c) => c,
                    None => open_pair(&options).map_err(|e| format!("{e:#}"))?,
                };
                let more = last_rowid(&write).and_then(|last| {
                    let since = quiet.lock().ok().and_then(|mut q| q.since(last));
                    pack_round(&read, &mut write, Utc::now(), since)
                });
                Ok::<_, String>((more, (read, write)))
            })
            .await;
            let more = match step {
                Ok(Ok((Ok(more), c))) => {
                    conns = Some(c);
                    more
                }
                Ok(Ok((Err(e), c))) => {
                    conns = Some(c);
                    tracing::warn!(error = %e, "packing fixes failed; will try again");
                    false
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the packer could not open the database; will try again");
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the packer stopped; will start again");
                    false
                }
            };
            if !more {
                tokio::time::sleep(PACK_EVERY).await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fix_in(hour: i64) -> impl Strategy<Value = Packed> {
        (
            0..HOUR_S * 1_000_000_000,
            any::<f64>(),
            any::<f64>(),
            any::<f64>(),
            any::<i32>(),
        )
            .prop_map(move |(n, lat, lon, acc, flags)| {
                (
                    DateTime::from_timestamp_nanos(nanos(hour_start(hour)) + n),
                    lat,
                    lon,
                    acc,
                    flags,
                )
            })
    }

    proptest! {
        #[test]
        fn a_pack_gives_back_exactly_the_fixes_packed_in_time_order(
            (hour, fixes) in (0i64..600_000)
                .prop_flat_map(|h| (Just(h), proptest::collection::vec(fix_in(h), 0..200))),
        ) {
            let mut packed = fixes.clone();
            let blob = encode(hour, &mut packed);
            let mut back = Vec::new();
            prop_assert!(decode(hour, &blob, |p| back.push(p)).is_some());
            let mut want = fixes;
            want.sort_by(order);
            prop_assert_eq!(back.len(), want.len());
            for (b, w) in back.iter().zip(&want) {
                prop_assert_eq!(b.0, w.0);
                prop_assert_eq!(b.1.to_bits(), w.1.to_bits());
                prop_assert_eq!(b.2.to_bits(), w.2.to_bits());
                prop_assert_eq!(b.3.to_bits(), w.3.to_bits());
                prop_assert_eq!(b.4, w.4);
            }
        }

        #[test]
        fn the_same_fixes_in_any_order_pack_to_the_same_bytes(
            mut fixes in proptest::collection::vec(fix_in(490_000), 0..50),
        ) {
            let mut reversed: Vec<Packed> = fixes.iter().rev().copied().collect();
            prop_assert_eq!(encode(490_000, &mut fixes), encode(490_000, &mut reversed));
        }

        #[test]
        fn any_bytes_decode_or_are_refused_without_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let _ = decode(490_000, &bytes, |_| {});
        }
    }

    /// A migrated SQLite file and two plain connections to it (foreign keys off, so that
    /// fixes need no members).
    async fn file() -> (tempfile::TempDir, Connection, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::settings::Settings {
            database_url: crate::settings::Secret(format!(
                "sqlite://{}/packs.db?mode=rwc",
                dir.path().display()
            )),
            ..crate::settings::Settings::default()
        };
        let db = crate::db::connect(&settings).await.unwrap();
        crate::db::migrate(&db).await.unwrap();
        db.close().await.unwrap();
        let path = dir.path().join("packs.db");
        let open = || {
            let c = Connection::open(&path).unwrap();
            c.busy_timeout(Duration::from_secs(5)).unwrap();
            c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
            c
        };
        (dir, open(), open())
    }

    /// Writes a fix as the check-in writer does: with [`mark_written`] in its transaction.
    /// Its member gets a row of `members` (reads by time go through them).
    fn insert(c: &Connection, member: Uuid, t: DateTime<Utc>, lat: f64, flags: i32) {
        let tx = c.unchecked_transaction().unwrap();
        tx.execute(
            "INSERT OR IGNORE INTO members (id, username, display_name, role, active, \
             password_hash, created_at, updated_at) VALUES (?1, ?2, 'm', 'officer', 1, '-', '', '')",
            params![member.as_bytes(), member.to_string()],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO fixes (id, member_id, client_id, recorded_at, received_at, lat, lon, \
             accuracy_m, kind, datum, mock, flags, source) \
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, 7.5, 'ping', 'wgs84', 0, ?7, 'api')",
            params![
                Uuid::now_v7().as_bytes(),
                member.as_bytes(),
                Uuid::new_v4().as_bytes(),
                time(t),
                lat,
                lat / 3.0,
                flags
            ],
        )
        .unwrap();
        mark_written(&tx, [(&member, t)]).unwrap();
        tx.commit().unwrap();
    }

    /// What the index on time gives for `[a, b)`, sorted.
    fn raw(c: &Connection, a: DateTime<Utc>, b: DateTime<Utc>) -> Vec<(Uuid, Packed)> {
        let mut out: Vec<(Uuid, Packed)> = c
            .prepare(
                "SELECT member_id, recorded_at, lat, lon, accuracy_m, flags FROM fixes \
                 WHERE recorded_at >= ?1 AND recorded_at < ?2",
            )
            .unwrap()
            .query_map(params![time(a), time(b)], |r| {
                Ok((
                    uuid_of(r.get_ref(0)?.as_blob()?)?,
                    (
                        parse_time(r.get_ref(1)?.as_str()?)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ),
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        out.sort_by(|x, y| x.0.cmp(&y.0).then(order(&x.1, &y.1)));
        out
    }

    /// What [`read_packed`] gives for `[a, b)`, sorted, if the hour is packed.
    fn packed(c: &Connection, a: DateTime<Utc>, b: DateTime<Utc>) -> Option<Vec<(Uuid, Packed)>> {
        let tx = c.unchecked_transaction().unwrap();
        let mut out = Vec::new();
        let was = read_packed(&tx, a, b, |m, p| out.push((*m, p))).unwrap();
        out.sort_by(|x, y| x.0.cmp(&y.0).then(order(&x.1, &y.1)));
        was.then_some(out)
    }

    fn marked(c: &Connection) -> i64 {
        c.query_row("SELECT count(*) FROM fix_packs_dirty", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn packed_hours_read_as_the_table_reads_through_late_fixes_and_purges() {
        let (_dir, read, mut write) = file().await;
        let h0 = 490_000;
        let at = |h: i64, s: i64| hour_start(h) + chrono::Duration::milliseconds(s);
        let (m1, m2, m3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        for (k, m) in [m1, m2, m3].into_iter().enumerate() {
            for i in 0..40 {
                // Every 4.5 minutes over three hours, at odd milliseconds, with flags.
                insert(
                    &write,
                    m,
                    at(h0, i * 270_123 + k as i64 * 17),
                    31.0 + i as f64 * 1e-4,
                    i as i32 % 3,
                );
            }
        }
        // A fix exactly on an hour's boundary, and the last nanosecond of an hour.
        insert(&write, m1, hour_start(h0 + 1), 31.5, 0);
        insert(
            &write,
            m2,
            hour_start(h0 + 2) - chrono::Duration::nanoseconds(1),
            31.6,
            0,
        );

        // An hour written into since the packer last looked is left for later.
        let last = last_rowid(&write).unwrap();
        assert!(read_hour(&read, h0 + 1, last - 1).unwrap().is_none());
        assert!(read_hour(&read, h0 + 1, last).unwrap().is_some());
        // Nothing is packed before its time, then every due hour is, in turn.
        assert_eq!(
            pack_next(&read, &mut write, hour_start(h0 + 2), i64::MAX).unwrap(),
            None
        );
        let now = hour_start(h0 + 3) + PACK_AFTER;
        assert_eq!(
            pack_next(&read, &mut write, now, i64::MAX).unwrap(),
            Some(h0)
        );
        assert_eq!(
            pack_next(&read, &mut write, now, i64::MAX).unwrap(),
            Some(h0 + 1)
        );
        assert_eq!(
            pack_next(&read, &mut write, now, i64::MAX).unwrap(),
            Some(h0 + 2)
        );
        assert_eq!(pack_next(&read, &mut write, now, i64::MAX).unwrap(), None);
        assert_eq!(packed_range(&write).unwrap(), Some((h0, h0 + 3)));
        assert_eq!(marked(&write), 0);
        let windows = [
            (hour_start(h0), hour_start(h0 + 1)),
            (hour_start(h0 + 1), hour_start(h0 + 2)),
            (hour_start(h0 + 2), hour_start(h0 + 3)),
            (at(h0 + 1, 600_000), at(h0 + 1, 1_800_017)),
        ];
        let same = |read: &Connection| {
            for (a, b) in windows {
                let p = packed(read, a, b).expect("packed");
                assert_eq!(p, raw(read, a, b), "{a}..{b}");
            }
        };
        same(&read);
        assert!(packed(&read, hour_start(h0 + 3), hour_start(h0 + 4)).is_none());
        assert!(packed(&read, hour_start(h0), hour_start(h0 + 2)).is_none());
        assert!(
            packed(&read, hour_start(h0 + 1), hour_start(h0 + 2))
                .unwrap()
                .len()
                > 40
        );

        // Late fixes mark their members' hours; reads still give what the table holds;
        // packing again clears the marks.
        insert(&write, m3, at(h0 + 1, 1_000), 32.0, 4);
        insert(&write, m3, at(h0 + 1, 2_000), 32.1, 0);
        insert(&write, m1, at(h0, 5), 32.2, 0);
        insert(&write, m2, at(h0 + 2, 3_599_999), 32.3, 1);
        assert_eq!(marked(&write), 3);
        same(&read);
        assert_eq!(repack_marked(&mut write, i64::MAX).unwrap(), 3);
        assert_eq!(marked(&write), 0);
        same(&read);

        // A fix written while an hour is being packed marks its member.
        insert(
            &write,
            m1,
            hour_start(h0 + 3) + chrono::Duration::seconds(1),
            33.0,
            0,
        );
        let range = packed_range(&write).unwrap();
        let hour = read_hour(&read, h0 + 3, i64::MAX).unwrap().unwrap();
        insert(
            &write,
            m2,
            hour_start(h0 + 3) + chrono::Duration::seconds(2),
            33.1,
            0,
        );
        assert!(write_hour(&mut write, range, hour).unwrap());
        assert_eq!(marked(&write), 1);
        let (a, b) = (hour_start(h0 + 3), hour_start(h0 + 4));
        assert_eq!(packed(&read, a, b).unwrap(), raw(&read, a, b));
        assert_eq!(packed(&read, a, b).unwrap().len(), 2);
        // A stale read (the range moved on meanwhile) writes nothing.
        let again = read_hour(&read, h0 + 3, i64::MAX).unwrap().unwrap();
        assert!(!write_hour(&mut write, range, again).unwrap());

        // Retention: the hours before the cutoff and the one holding it leave the packs
        // before their fixes go, and that hour is read from the table.
        let cutoff = at(h0 + 1, 1_200_000);
        for statement in forget_before_on(cutoff) {
            write.execute_batch(&statement).unwrap();
        }
        write
            .execute("DELETE FROM fixes WHERE recorded_at < ?1", [time(cutoff)])
            .unwrap();
        assert_eq!(packed_range(&write).unwrap(), Some((h0 + 2, h0 + 4)));
        assert_eq!(
            marked(&write),
            1,
            "deleting purged fixes marks nothing more"
        );
        assert!(packed(&read, hour_start(h0 + 1), hour_start(h0 + 2)).is_none());
        let (a, b) = (hour_start(h0 + 2), hour_start(h0 + 3));
        assert_eq!(packed(&read, a, b).unwrap(), raw(&read, a, b));
        let packs: i64 = write
            .query_row(
                "SELECT count(*) FROM fix_packs WHERE hour < ?1",
                [h0 + 2],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(packs, 0);
    }

    #[test]
    fn a_cut_pack_is_refused() {
        let t = hour_start(490_000) + chrono::Duration::seconds(5);
        let blob = encode(490_000, &mut [(t, 31.2, 121.5, 8.0, 0)]);
        assert!(decode(490_000, &blob[..blob.len() - 1], |_| {}).is_none());
        let mut n = 0;
        assert!(decode(490_000, &blob, |_| n += 1).is_some());
        assert_eq!(n, 1);
    }
}
