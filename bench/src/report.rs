//! The report: the table, the targets, and the same figures as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    load::{Kind, Measured},
    raw::RawMeasured,
};

/// Single fixes a second wanted at 64 connections.
pub const TARGET_SINGLE_FIXES_PER_S: f64 = 15_000.0;
/// Largest p99 latency wanted for single fixes at 64 connections, in ms.
pub const TARGET_SINGLE_P99_MS: f64 = 25.0;
/// Connections of the single-fix target.
pub const TARGET_SINGLE_CONNS: usize = 64;
/// Batch fixes a second wanted.
pub const TARGET_BATCH_FIXES_PER_S: f64 = 150_000.0;
/// Share of the raw insert ceiling wanted for batches.
pub const TARGET_BATCH_SHARE_OF_RAW: f64 = 0.5;

/// One target and whether this run met it.
#[derive(Debug, Serialize)]
pub struct Target {
    /// What is wanted.
    pub name: String,
    /// Whether this run met it.
    pub met: bool,
    /// The figures it was judged on.
    pub detail: String,
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the run ended (UTC, RFC 3339).
    pub date: String,
    /// `patrol --version`.
    pub patrol_version: String,
    /// The database and its durability settings.
    pub database: String,
    /// Whether the database is PostgreSQL.
    pub postgres: bool,
    /// Cores this process may use.
    pub cores: usize,
    /// 1-minute load average when the run started (before the server).
    pub load_average_at_start: Option<f64>,
    /// CPU model from /proc/cpuinfo.
    pub cpu_model: Option<String>,
    /// How the load was generated.
    pub generator: String,
    /// Measured seconds per workload.
    pub seconds_per_workload: u64,
    /// Warm-up seconds before each.
    pub warmup_seconds: u64,
    /// Members created and logged in.
    pub members: usize,
    /// How the fixes' client ids were made: `random (v4)` or `time-ordered (v7)`.
    pub client_ids: &'static str,
    /// Whether the server's OpenAPI document lists `/api/v1/checkins`.
    pub checkins_route_in_openapi: bool,
    /// The HTTP workloads, in the order run.
    pub workloads: Vec<Measured>,
    /// The raw insert baseline (run after the server stopped).
    pub raw: Option<RawMeasured>,
    /// The targets.
    pub targets: Vec<Target>,
    /// Seconds the server took to exit after SIGTERM.
    pub server_stop_s: Option<f64>,
    /// Lines the server logged at warn level or above.
    pub server_log_lines: usize,
    /// The last of them, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_log_tail: Option<String>,
}

impl Report {
    /// A report of these HTTP workloads; the rest is filled in later.
    pub fn new(
        seconds: u64,
        warmup: u64,
        members: usize,
        checkins_route: bool,
        workloads: Vec<Measured>,
    ) -> Report {
        Report {
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            patrol_version: String::new(),
            database: String::new(),
            postgres: false,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_average_at_start: None,
            cpu_model: crate::cpu::cpu_model(),
            generator: "hyper 1 HTTP/1.1, one keep-alive connection per task, \
                        tokio multi-threaded runtime with 2 workers on the same machine as the server"
                .into(),
            seconds_per_workload: seconds,
            warmup_seconds: warmup,
            members,
            client_ids: "random (v4)",
            checkins_route_in_openapi: checkins_route,
            workloads,
            raw: None,
            targets: Vec::new(),
            server_stop_s: None,
            server_log_lines: 0,
            server_log_tail: None,
        }
    }

    /// Judges the targets on the figures.
    pub fn evaluate_targets(&mut self) {
        let mut targets = Vec::new();
        let name = format!(
            "single fixes ≥ {}/s with p99 < {} ms at {} connections",
            thousands(TARGET_SINGLE_FIXES_PER_S),
            TARGET_SINGLE_P99_MS,
            TARGET_SINGLE_CONNS
        );
        match self
            .workloads
            .iter()
            .find(|w| w.kind == Kind::Single && w.conns == TARGET_SINGLE_CONNS)
        {
            Some(w) => targets.push(Target {
                name,
                met: w.fixes_per_s >= TARGET_SINGLE_FIXES_PER_S
                    && w.p99_ms.is_some_and(|p| p < TARGET_SINGLE_P99_MS),
                detail: format!(
                    "{} fixes/s, p99 {}, {} errors",
                    thousands(w.fixes_per_s),
                    ms(w.p99_ms),
                    w.error_count()
                ),
            }),
            None => targets.push(Target {
                name,
                met: false,
                detail: "not measured".into(),
            }),
        }
        let raw = self.raw.as_ref().map(|r| r.rows_per_s);
        let batches: Vec<&Measured> = self
            .workloads
            .iter()
            .filter(|w| matches!(w.kind, Kind::Batch(_)))
            .collect();
        if batches.is_empty() {
            targets.push(Target {
                name: format!(
                    "batches ≥ {} fixes/s and ≥ half the raw insert ceiling",
                    thousands(TARGET_BATCH_FIXES_PER_S)
                ),
                met: false,
                detail: "not measured".into(),
            });
        }
        for w in batches {
            let half = raw.map(|r| r * TARGET_BATCH_SHARE_OF_RAW);
            targets.push(Target {
                name: format!(
                    "{} at {} connections ≥ {} fixes/s and ≥ half the raw insert ceiling{}",
                    w.name,
                    w.conns,
                    thousands(TARGET_BATCH_FIXES_PER_S),
                    half.map_or(String::new(), |h| format!(" ({})", thousands(h)))
                ),
                met: w.fixes_per_s >= TARGET_BATCH_FIXES_PER_S
                    && half.is_some_and(|h| w.fixes_per_s >= h),
                detail: format!(
                    "{} fixes/s ({} of the raw ceiling), {} errors",
                    thousands(w.fixes_per_s),
                    raw.map_or("-".into(), |r| format!("{:.0}%", w.fixes_per_s / r * 100.0)),
                    w.error_count()
                ),
            });
        }
        self.targets = targets;
    }

    /// The report as a text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "patrol ingest benchmark — {}, {} cores ({}), {} s per workload (+{} s warm-up)",
            self.database,
            self.cores,
            self.cpu_model.as_deref().unwrap_or("unknown CPU"),
            self.seconds_per_workload,
            self.warmup_seconds
        );
        let _ = writeln!(
            out,
            "{}, {} members, client ids {}, {}, load average {} at the start; the load generator (2 tokio workers) shares the cores with the server",
            self.patrol_version,
            self.members,
            self.client_ids,
            self.date,
            self.load_average_at_start
                .map_or("-".into(), |l| format!("{l:.2}"))
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<36} {:>5} {:>9} {:>9} {:>7} {:>7} {:>7} {:>8} {:>8} {:>9}",
            "workload",
            "conns",
            "req/s",
            "fixes/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "srv cpu",
            "gen cpu",
            "other cpu"
        );
        for w in &self.workloads {
            let fixes = if w.kind == Kind::Healthz {
                "-".to_owned()
            } else {
                thousands(w.fixes_per_s)
            };
            let _ = writeln!(
                out,
                "{:<36} {:>5} {:>9} {:>9} {:>7} {:>7} {:>7} {:>8} {:>8} {:>9}",
                w.name,
                w.conns,
                thousands(w.requests_per_s),
                fixes,
                num(w.p50_ms),
                num(w.p99_ms),
                w.error_count(),
                pct(w.server_cpu_pct),
                pct(w.generator_cpu_pct),
                pct(w.other_cpu_pct)
            );
        }
        if let Some(r) = &self.raw {
            let _ = writeln!(
                out,
                "{:<36} {:>5} {:>9} {:>9} {:>7} {:>7} {:>7} {:>8} {:>8} {:>9}",
                format!("baseline raw insert ({}-row txns)", r.rows_per_transaction),
                1,
                thousands(r.transactions_per_s),
                thousands(r.rows_per_s),
                num(r.p50_ms),
                num(r.p99_ms),
                0,
                "-",
                pct(r.cpu_pct),
                pct(r.other_cpu_pct)
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "req/s and fixes/s count 2xx answers only; p50/p99 are of 2xx answers (raw insert: of one \
             transaction); cpu is % of one core over the measured window (raw insert: the bench process, \
             which runs SQLite in-process); other cpu is every other process on the machine."
        );
        if let Some(r) = &self.raw {
            let _ = writeln!(
                out,
                "raw insert: {} rows in {:.1} s on one connection, {} consecutive fixes of one member at a time, the members in turn, {}.",
                thousands(r.rows as f64),
                r.seconds,
                thousands(r.rows_per_member_run as f64),
                r.storage
            );
        }
        for w in self.workloads.iter().filter(|w| w.flagged > 0) {
            let _ = writeln!(
                out,
                "note: {} at {}: the server flagged {} stored fixes (flags other than outside_shift)",
                w.name, w.conns, w.flagged
            );
        }
        for w in self.workloads.iter().filter(|w| w.error_count() > 0) {
            let by: Vec<String> = w.errors.iter().map(|(k, v)| format!("{k} × {v}")).collect();
            let _ = writeln!(
                out,
                "errors of {} at {}: {}",
                w.name,
                w.conns,
                by.join(", ")
            );
        }
        if !self.checkins_route_in_openapi {
            let _ = writeln!(
                out,
                "note: the server's OpenAPI document has no /api/v1/checkins: the check-in figures are pending."
            );
        }
        if self.server_log_lines > 0 {
            let _ = writeln!(
                out,
                "note: the server logged {} lines at warn or above; the last:\n{}",
                self.server_log_lines,
                self.server_log_tail.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "targets: single fixes ≥ {}/s with p99 < {} ms at {} connections; batches ≥ {} fixes/s and ≥ half the raw insert ceiling",
            thousands(TARGET_SINGLE_FIXES_PER_S),
            TARGET_SINGLE_P99_MS,
            TARGET_SINGLE_CONNS,
            thousands(TARGET_BATCH_FIXES_PER_S)
        );
        for t in &self.targets {
            let _ = writeln!(
                out,
                "  {:<9} {}: {}",
                if t.met { "[met]" } else { "[NOT MET]" },
                t.name,
                t.detail
            );
        }
        out
    }
}

/// `n` rounded, with thousands separated by commas.
pub fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| {
        if v < 10.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.1}")
        }
    })
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{} ms", num(Some(v))))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(15_000.0), "15,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
