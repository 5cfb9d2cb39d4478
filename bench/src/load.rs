//! The load generator: workloads of tasks that each loop requests on one keep-alive
//! connection for a fixed time, and the members whose fixes they send.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use hyper::{Method, header::HeaderValue};
use serde::Serialize;

use crate::http::{Conn, host_header, request};

/// Metres per degree of latitude (near enough at 34°N for a plausible walk).
const METRES_PER_DEG_LAT: f64 = 111_320.0;
/// A member walks back and forth along this many metres, one metre a second.
const WALK_M: u64 = 500;
/// The newest `recorded_at` a fix may get, before now.
const NEWEST_BEFORE_NOW: TimeDelta = TimeDelta::seconds(2);

/// One logged-in member and the track of fixes they send.
pub struct Member {
    /// Position in the list of members (bench0 is 0).
    pub index: usize,
    /// `Bearer <access token>`.
    pub auth: HeaderValue,
    next_recorded_at: DateTime<Utc>,
    /// Client ids time-ordered (UUID v7) instead of random (v4).
    pub ordered_client_ids: bool,
    steps: u64,
    lat0: f64,
    lon0: f64,
}

impl Member {
    /// A member whose track starts at `first_recorded_at`, on their own start point.
    pub fn new(index: usize, token: &str, first_recorded_at: DateTime<Utc>) -> Member {
        Member {
            index,
            auth: HeaderValue::from_str(&format!("Bearer {token}"))
                .expect("a token is a valid header value"),
            next_recorded_at: first_recorded_at,
            ordered_client_ids: false,
            steps: 0,
            lat0: 34.22 + (index % 16) as f64 * 0.001,
            lon0: 108.95 + (index / 16) as f64 * 0.001,
        }
    }

    /// Appends the member's next fix as JSON: one second later and one metre further than
    /// the last, never later than `newest`.
    fn push_fix(&mut self, out: &mut String, newest: DateTime<Utc>) {
        let recorded_at = self.next_recorded_at.min(newest);
        self.next_recorded_at = recorded_at + TimeDelta::seconds(1);
        let along = self.steps % (2 * WALK_M);
        let metres = if along < WALK_M {
            along
        } else {
            2 * WALK_M - along
        };
        self.steps += 1;
        let lat = self.lat0 + metres as f64 / METRES_PER_DEG_LAT;
        let _ = write!(
            out,
            r#"{{"client_id":"{}","recorded_at":"{}","lat":{:.7},"lon":{:.7},"accuracy_m":8.0,"speed_mps":1.0}}"#,
            if self.ordered_client_ids {
                uuid::Uuid::now_v7()
            } else {
                uuid::Uuid::new_v4()
            },
            recorded_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            lat,
            self.lon0,
        );
    }
}

/// What the tasks of a workload send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `GET /healthz`, no token.
    Healthz,
    /// `POST /api/v1/checkins` with one fix.
    Single,
    /// `POST /api/v1/checkins` with `{"checkins": [...]}` of this many fixes.
    Batch(usize),
}

/// A workload to run.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Name in the report.
    pub name: String,
    /// What is sent.
    pub kind: Kind,
    /// Concurrent connections (one task each).
    pub conns: usize,
}

/// The figures of one workload, measured after the warm-up.
#[derive(Debug, Serialize)]
pub struct Measured {
    /// Name in the report.
    pub name: String,
    /// What was sent.
    pub kind: Kind,
    /// Concurrent connections.
    pub conns: usize,
    /// Length of the measured window, in seconds.
    pub seconds: f64,
    /// 2xx answers completed in the window.
    pub ok_requests: u64,
    /// Fixes stored (created or duplicate) by those answers (0 for `/healthz`).
    pub fixes: u64,
    /// Stored fixes that the server gave a flag other than `outside_shift` (should be 0;
    /// bench members are admins without shifts, so every fix is `outside_shift`).
    pub flagged: u64,
    /// 2xx answers a second.
    pub requests_per_s: f64,
    /// Fixes a second.
    pub fixes_per_s: f64,
    /// Median latency of the 2xx answers, in ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of the 2xx answers, in ms.
    pub p99_ms: Option<f64>,
    /// Slowest 2xx answer, in ms.
    pub max_ms: Option<f64>,
    /// Requests that got no 2xx answer in the window, by status code or failure, and fixes
    /// of 2xx batch answers that were rejected.
    pub errors: BTreeMap<String, u64>,
    /// CPU used by the server in the window, in % of one core.
    pub server_cpu_pct: Option<f64>,
    /// CPU used by this load generator in the window, in % of one core.
    pub generator_cpu_pct: Option<f64>,
    /// CPU used by every other process on the machine in the window, in % of one core
    /// (anything well above 0 means the figures were disturbed).
    pub other_cpu_pct: Option<f64>,
}

impl Measured {
    /// All errors.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[derive(Default)]
struct TaskStats {
    ok: u64,
    fixes: u64,
    flagged: u64,
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
}

/// Runs a workload for `warmup + seconds` and returns what was measured after the warm-up.
/// `members` are dealt out to the tasks (member i to task i mod conns), so each member is
/// driven by one connection only and its track stays in order; they are handed back.
pub async fn run(
    addr: SocketAddr,
    spec: &Spec,
    members: &mut Vec<Member>,
    warmup: Duration,
    seconds: Duration,
    server_pid: Option<u32>,
) -> anyhow::Result<Measured> {
    if spec.kind != Kind::Healthz && members.len() < spec.conns {
        anyhow::bail!(
            "{} needs at least {} members, there are {}",
            spec.name,
            spec.conns,
            members.len()
        );
    }
    let mut buckets: Vec<Vec<Member>> = (0..spec.conns).map(|_| Vec::new()).collect();
    if spec.kind != Kind::Healthz {
        for member in members.drain(..) {
            let slot = member.index % spec.conns;
            buckets[slot].push(member);
        }
    }
    let start = Instant::now();
    let measure_from = start + warmup;
    let until = measure_from + seconds;
    let mut tasks = Vec::with_capacity(spec.conns);
    for bucket in buckets {
        tasks.push(tokio::spawn(task(
            addr,
            spec.kind,
            bucket,
            measure_from,
            until,
        )));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = (
        crate::cpu::machine_busy_ticks(),
        server_pid.and_then(crate::cpu::process_ticks),
        crate::cpu::own_ticks(),
    );
    let window_start = Instant::now();
    tokio::time::sleep_until(until.into()).await;
    let cpu_after = (
        crate::cpu::machine_busy_ticks(),
        server_pid.and_then(crate::cpu::process_ticks),
        crate::cpu::own_ticks(),
    );
    let window = window_start.elapsed();

    let mut total = TaskStats::default();
    for handle in tasks {
        let (stats, bucket) = handle.await?;
        total.ok += stats.ok;
        total.fixes += stats.fixes;
        total.flagged += stats.flagged;
        total.latencies_us.extend(stats.latencies_us);
        for (k, v) in stats.errors {
            *total.errors.entry(k).or_default() += v;
        }
        members.extend(bucket);
    }
    members.sort_by_key(|m| m.index);

    let secs = seconds.as_secs_f64();
    total.latencies_us.sort_unstable();
    let pct = |p: f64| percentile_ms(&total.latencies_us, p);
    let cpu_pct = |before: Option<u64>, after: Option<u64>| {
        let (b, a) = (before?, after?);
        Some(crate::cpu::ticks_to_secs(a.saturating_sub(b)) / window.as_secs_f64() * 100.0)
    };
    Ok(Measured {
        name: spec.name.clone(),
        kind: spec.kind,
        conns: spec.conns,
        seconds: secs,
        ok_requests: total.ok,
        fixes: total.fixes,
        flagged: total.flagged,
        requests_per_s: total.ok as f64 / secs,
        fixes_per_s: total.fixes as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: total.latencies_us.last().map(|&us| f64::from(us) / 1000.0),
        errors: total.errors,
        server_cpu_pct: cpu_pct(cpu_before.1, cpu_after.1),
        generator_cpu_pct: cpu_pct(cpu_before.2, cpu_after.2),
        other_cpu_pct: crate::cpu::others_pct(cpu_before, cpu_after, window.as_secs_f64()),
    })
}

/// The `p` quantile (nearest rank) of sorted microseconds, in milliseconds.
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    Some(f64::from(sorted_us[rank - 1]) / 1000.0)
}

async fn task(
    addr: SocketAddr,
    kind: Kind,
    mut members: Vec<Member>,
    measure_from: Instant,
    until: Instant,
) -> (TaskStats, Vec<Member>) {
    let host = host_header(addr);
    let mut conn = Conn::new(addr);
    let mut stats = TaskStats::default();
    let mut body = String::new();
    let mut turn = 0usize;
    while Instant::now() < until {
        let (req, fixes) = match kind {
            Kind::Healthz => (request(Method::GET, &host, "/healthz", None, None), 0),
            Kind::Single | Kind::Batch(_) => {
                let count = members.len();
                let member = &mut members[turn % count];
                turn += 1;
                let newest = Utc::now() - NEWEST_BEFORE_NOW;
                body.clear();
                let n = match kind {
                    Kind::Batch(n) => {
                        body.push_str(r#"{"checkins":["#);
                        for i in 0..n {
                            if i > 0 {
                                body.push(',');
                            }
                            member.push_fix(&mut body, newest);
                        }
                        body.push_str("]}");
                        n
                    }
                    _ => {
                        member.push_fix(&mut body, newest);
                        1
                    }
                };
                let req = request(
                    Method::POST,
                    &host,
                    "/api/v1/checkins",
                    Some(&member.auth),
                    Some(Bytes::copy_from_slice(body.as_bytes())),
                );
                (req, n as u64)
            }
        };
        let sent = Instant::now();
        let answer = conn.send(req).await;
        let done = Instant::now();
        let in_window = done >= measure_from && done <= until;
        match answer {
            Ok((status, answer)) if status.is_success() => {
                if in_window {
                    stats.ok += 1;
                    // Bench members are admins without shifts, so every fix is
                    // outside_shift; any other flag means the tracks looked implausible.
                    stats.flagged += count_of(&answer, br#""flags":[""#)
                        .saturating_sub(count_of(&answer, br#""flags":["outside_shift"]"#))
                        as u64;
                    match kind {
                        Kind::Batch(_) => {
                            // `created`, `duplicate` and `rejected` follow the results.
                            let stored = number_after_last(&answer, br#""created":"#)
                                .zip(number_after_last(&answer, br#""duplicate":"#))
                                .map(|(c, d)| c + d);
                            let rejected = number_after_last(&answer, br#""rejected":"#);
                            stats.fixes += stored.unwrap_or(0);
                            if let Some(r) = rejected.filter(|r| *r > 0) {
                                *stats.errors.entry("fix rejected".into()).or_default() += r;
                            }
                            if stored.is_none() {
                                *stats
                                    .errors
                                    .entry("unreadable batch answer".into())
                                    .or_default() += 1;
                            }
                        }
                        _ => stats.fixes += fixes,
                    }
                    let us = done.duration_since(sent).as_micros();
                    stats
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            Ok((status, _)) => {
                if in_window {
                    *stats.errors.entry(status.as_u16().to_string()).or_default() += 1;
                }
            }
            Err(failure) => {
                if in_window {
                    *stats.errors.entry(failure.key().to_owned()).or_default() += 1;
                }
                // Do not spin on a server that refuses connections.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    (stats, members)
}

/// How often `needle` occurs in `hay`.
fn count_of(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// The unsigned number right after the last `key` in `hay`.
fn number_after_last(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = hay.windows(key.len()).rposition(|w| w == key)? + key.len();
    let digits: Vec<u8> = hay[at..]
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn batch_answers_are_counted() {
        let answer = br#"{"results":[{"client_id":"a","status":"created","flags":[]},{"status":"created","flags":["too_fast"]}],"created":2,"duplicate":0,"rejected":1}"#;
        assert_eq!(number_after_last(answer, br#""created":"#), Some(2));
        assert_eq!(number_after_last(answer, br#""rejected":"#), Some(1));
        assert_eq!(number_after_last(answer, br#""missing":"#), None);
        assert_eq!(count_of(answer, br#""flags":[""#), 1);
    }

    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), Some(50.0));
        assert_eq!(percentile_ms(&v, 0.99), Some(99.0));
        assert_eq!(percentile_ms(&[7000], 0.99), Some(7.0));
        assert_eq!(percentile_ms(&[], 0.5), None);
    }

    #[test]
    fn a_track_moves_one_metre_a_second_and_never_into_the_future() {
        let start = Utc::now() - TimeDelta::hours(1);
        let mut m = Member::new(3, "t", start);
        let mut out = String::new();
        m.push_fix(&mut out, Utc::now());
        let first: serde_json::Value = serde_json::from_str(&out).unwrap();
        out.clear();
        m.push_fix(&mut out, Utc::now());
        let second: serde_json::Value = serde_json::from_str(&out).unwrap();
        let t = |v: &serde_json::Value| {
            DateTime::parse_from_rfc3339(v["recorded_at"].as_str().unwrap()).unwrap()
        };
        assert_eq!((t(&second) - t(&first)).num_seconds(), 1);
        let dlat = second["lat"].as_f64().unwrap() - first["lat"].as_f64().unwrap();
        assert!((dlat * METRES_PER_DEG_LAT - 1.0).abs() < 0.01);
        assert_ne!(first["client_id"], second["client_id"]);
        let newest = start - TimeDelta::hours(2);
        out.clear();
        m.push_fix(&mut out, newest);
        let clamped: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(t(&clamped).timestamp(), newest.timestamp());
    }
}
