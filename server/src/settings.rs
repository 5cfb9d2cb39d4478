//! Settings: command-line flags, then `PATROL_*` environment variables, then an
//! optional TOML file, then defaults. Secrets are never printed.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

/// The default database: a SQLite file in the working directory, created if missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://patrol.db?mode=rwc";

/// Settings as given on the command line or in the environment (clap resolves flag > env).
#[derive(Args, Debug, Default, Clone)]
pub struct SettingsArgs {
    /// TOML file with settings (keys as below, in snake_case); flags and PATROL_* variables win over it
    #[arg(long, global = true, env = "PATROL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL: sqlite://FILE?mode=rwc or postgres://USER@HOST/DB [default: sqlite://patrol.db?mode=rwc]
    #[arg(
        long,
        global = true,
        env = "PATROL_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, global = true, env = "PATROL_BIND", value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// Secret that signs access tokens (HS256); generated once and kept in the database when unset
    #[arg(
        long,
        global = true,
        env = "PATROL_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// The previous signing secret, still accepted for verification during a key rotation
    #[arg(
        long,
        global = true,
        env = "PATROL_JWT_PREVIOUS_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_previous_secret: Option<String>,
    /// Time zone of days, months and roster patterns [default: Asia/Shanghai]
    #[arg(long, global = true, env = "PATROL_TIMEZONE", value_name = "TZ")]
    pub timezone: Option<String>,
    /// Log line format: text or json [default: text]
    #[arg(long, global = true, env = "PATROL_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// SQLite synchronous mode: full or normal (normal may lose the last commits on power loss) [default: full]
    #[arg(
        long,
        global = true,
        env = "PATROL_SQLITE_SYNCHRONOUS",
        value_name = "MODE"
    )]
    pub sqlite_synchronous: Option<String>,
    /// Start on a PostgreSQL server whose fsync or synchronous_commit is off [default: false]
    #[arg(
        long,
        global = true,
        env = "PATROL_ALLOW_UNSAFE_DURABILITY",
        value_name = "BOOL"
    )]
    pub allow_unsafe_durability: Option<bool>,
    /// Lifetime of an access token in seconds [default: 900]
    #[arg(
        long,
        global = true,
        env = "PATROL_ACCESS_TOKEN_TTL_S",
        value_name = "SECONDS"
    )]
    pub access_token_ttl_s: Option<u64>,
    /// Lifetime of a refresh token in seconds [default: 2592000, 30 days]
    #[arg(
        long,
        global = true,
        env = "PATROL_REFRESH_TOKEN_TTL_S",
        value_name = "SECONDS"
    )]
    pub refresh_token_ttl_s: Option<u64>,
    /// Largest request body accepted, in bytes [default: 4194304]
    #[arg(
        long,
        global = true,
        env = "PATROL_MAX_BODY_BYTES",
        value_name = "BYTES"
    )]
    pub max_body_bytes: Option<usize>,
    /// Seconds to let in-flight requests finish after SIGINT/SIGTERM [default: 30]
    #[arg(
        long,
        global = true,
        env = "PATROL_SHUTDOWN_TIMEOUT_S",
        value_name = "SECONDS"
    )]
    pub shutdown_timeout_s: Option<u64>,
    /// Largest number of pooled database connections [default: 16]
    #[arg(
        long,
        global = true,
        env = "PATROL_DB_MAX_CONNECTIONS",
        value_name = "N"
    )]
    pub db_max_connections: Option<u32>,
    /// Milliseconds a statement waits for a lock another connection or process holds (SQLite's busy timeout, PostgreSQL's lock_timeout); past it the request is answered 503 database_busy [default: 10000]
    #[arg(
        long,
        global = true,
        env = "PATROL_DB_LOCK_TIMEOUT_MS",
        value_name = "MS"
    )]
    pub db_lock_timeout_ms: Option<u64>,
    /// A fix less accurate than this (metres) is flagged low_accuracy and does not count [default: 50]
    #[arg(
        long,
        global = true,
        env = "PATROL_MAX_ACCURACY_M",
        value_name = "METRES"
    )]
    pub max_accuracy_m: Option<f64>,
    /// Two fixes of a member at most this many seconds apart join into a track segment; presence lasts half of it either side of a fix [default: 120]
    #[arg(long, global = true, env = "PATROL_MAX_GAP_S", value_name = "SECONDS")]
    pub max_gap_s: Option<i64>,
    /// Minutes without a fix after which an on-duty member is listed as silent [default: 10]
    #[arg(
        long,
        global = true,
        env = "PATROL_SILENT_AFTER_MIN",
        value_name = "MINUTES"
    )]
    pub silent_after_min: Option<i64>,
    /// How far back a phone may send queued fixes, in days [default: 7]
    #[arg(
        long,
        global = true,
        env = "PATROL_SYNC_WINDOW_DAYS",
        value_name = "DAYS"
    )]
    pub sync_window_days: Option<u32>,
    /// Late fixes (recorded more than 30 s before they arrive) one member may send in a day,
    /// as a budget that refills evenly over the day [default: 30000]
    #[arg(
        long,
        global = true,
        env = "PATROL_LATE_FIXES_PER_DAY",
        value_name = "N"
    )]
    pub late_fixes_per_day: Option<u32>,
    /// Whether a fix that came without an accuracy (possible with OsmAnd and Traccar
    /// Client) counts for coverage as if just accurate enough [default: false]
    #[arg(
        long,
        global = true,
        env = "PATROL_COUNT_UNKNOWN_ACCURACY",
        value_name = "BOOL"
    )]
    pub count_unknown_accuracy: Option<bool>,
    /// Speed above which a foot patrol's or volunteer's fix is implausible, m/s [default: 7]
    #[arg(
        long,
        global = true,
        env = "PATROL_MAX_SPEED_FOOT_MPS",
        value_name = "MPS"
    )]
    pub max_speed_foot_mps: Option<f64>,
    /// Speed above which a vehicle patrol's fix is implausible, m/s [default: 45]
    #[arg(
        long,
        global = true,
        env = "PATROL_MAX_SPEED_VEHICLE_MPS",
        value_name = "MPS"
    )]
    pub max_speed_vehicle_mps: Option<f64>,
    /// Seconds a device clock may run ahead of the server before fixes are flagged clock_skew [default: 60]
    #[arg(
        long,
        global = true,
        env = "PATROL_CLOCK_SKEW_TOLERANCE_S",
        value_name = "SECONDS"
    )]
    pub clock_skew_tolerance_s: Option<i64>,
    /// Identical fixes in a row that mark a fake-GPS app (static_repeat) [default: 10]
    #[arg(
        long,
        global = true,
        env = "PATROL_STATIC_REPEAT_RUN",
        value_name = "N"
    )]
    pub static_repeat_run: Option<usize>,
    /// Days fixes are kept [default: 90]
    #[arg(
        long,
        global = true,
        env = "PATROL_RETENTION_DAYS",
        value_name = "DAYS"
    )]
    pub retention_days: Option<u32>,
    /// Days audit records are kept [default: 730]
    #[arg(
        long,
        global = true,
        env = "PATROL_AUDIT_RETENTION_DAYS",
        value_name = "DAYS"
    )]
    pub audit_retention_days: Option<u32>,
    /// Seconds between purges of what is past its retention [default: 3600]
    #[arg(
        long,
        global = true,
        env = "PATROL_PURGE_EVERY_S",
        value_name = "SECONDS"
    )]
    pub purge_every_s: Option<u64>,
    /// Background map tiles for the console, an XYZ URL template such as https://tiles.example/{z}/{x}/{y}.png [default: none, a plain map]
    #[arg(long, global = true, env = "PATROL_TILE_URL", value_name = "URL")]
    pub tile_url: Option<String>,
    /// Seconds between evaluations of the alert rules [default: 60]
    #[arg(
        long,
        global = true,
        env = "PATROL_ALERT_EVERY_S",
        value_name = "SECONDS"
    )]
    pub alert_every_s: Option<u64>,
    /// Minutes without an eligible fix after which a route shift is idle (alert route_idle) [default: 20]
    #[arg(
        long,
        global = true,
        env = "PATROL_ROUTE_IDLE_MIN",
        value_name = "MINUTES"
    )]
    pub route_idle_min: Option<i64>,
    /// Minutes an SOS alert stays open after the member's last SOS check-in [default: 30]
    #[arg(
        long,
        global = true,
        env = "PATROL_SOS_HOLD_MIN",
        value_name = "MINUTES"
    )]
    pub sos_hold_min: Option<i64>,
    /// Live events kept for resuming an event stream with Last-Event-ID [default: 10000]
    #[arg(long, global = true, env = "PATROL_EVENT_HISTORY", value_name = "N")]
    pub event_history: Option<usize>,
    /// https:// URL that each raised, acknowledged and resolved alert is POSTed to as JSON [default: none]
    #[arg(long, global = true, env = "PATROL_WEBHOOK_URL", value_name = "URL")]
    pub webhook_url: Option<String>,
    /// Allow an http:// webhook URL, for a receiver on a trusted network [default: false]
    #[arg(
        long,
        global = true,
        env = "PATROL_WEBHOOK_ALLOW_HTTP",
        value_name = "BOOL"
    )]
    pub webhook_allow_http: Option<bool>,
    /// Secret of the webhook's X-Patrol-Signature (HMAC-SHA256 of the timestamp, a dot and the body) [default: none]
    #[arg(
        long,
        global = true,
        env = "PATROL_WEBHOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,
    /// PEM certificate (the server's first, then any intermediates) to serve HTTPS with; needs --tls-key [default: none, plain HTTP]
    #[arg(long, global = true, env = "PATROL_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert; needs --tls-cert [default: none]
    #[arg(long, global = true, env = "PATROL_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

/// The same keys, read from the optional TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    database_url: Option<String>,
    bind: Option<SocketAddr>,
    jwt_secret: Option<String>,
    jwt_previous_secret: Option<String>,
    timezone: Option<String>,
    log_format: Option<String>,
    sqlite_synchronous: Option<String>,
    allow_unsafe_durability: Option<bool>,
    access_token_ttl_s: Option<u64>,
    refresh_token_ttl_s: Option<u64>,
    max_body_bytes: Option<usize>,
    shutdown_timeout_s: Option<u64>,
    db_max_connections: Option<u32>,
    db_lock_timeout_ms: Option<u64>,
    max_accuracy_m: Option<f64>,
    max_gap_s: Option<i64>,
    silent_after_min: Option<i64>,
    sync_window_days: Option<u32>,
    late_fixes_per_day: Option<u32>,
    count_unknown_accuracy: Option<bool>,
    max_speed_foot_mps: Option<f64>,
    max_speed_vehicle_mps: Option<f64>,
    clock_skew_tolerance_s: Option<i64>,
    static_repeat_run: Option<usize>,
    retention_days: Option<u32>,
    audit_retention_days: Option<u32>,
    purge_every_s: Option<u64>,
    tile_url: Option<String>,
    alert_every_s: Option<u64>,
    route_idle_min: Option<i64>,
    sos_hold_min: Option<i64>,
    event_history: Option<usize>,
    webhook_url: Option<String>,
    webhook_allow_http: Option<bool>,
    webhook_secret: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// How SQLite flushes commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// Every commit is flushed to disk before it is acknowledged.
    Full,
    /// WAL commits are flushed at checkpoints; a power loss may lose the last ones.
    Normal,
}

/// A secret string whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The resolved settings of a running service.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Database URL (may hold a password: log it with [`Settings::database_url_redacted`]).
    pub database_url: Secret,
    /// Listen address.
    pub bind: SocketAddr,
    /// Signing secret given by the operator; `None` means use the stored generated one.
    pub jwt_secret: Option<Secret>,
    /// Previous signing secret, still accepted for verification.
    pub jwt_previous_secret: Option<Secret>,
    /// Time zone of days, months and roster patterns (IANA name).
    pub timezone: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// SQLite synchronous mode.
    pub sqlite_synchronous: SqliteSynchronous,
    /// Whether to start on a PostgreSQL server that does not flush commits.
    pub allow_unsafe_durability: bool,
    /// Access token lifetime.
    pub access_token_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_token_ttl: Duration,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    /// Pool size.
    pub db_max_connections: u32,
    /// How long a statement waits for a lock held elsewhere before it gives up.
    pub db_lock_timeout: Duration,
    /// Fixes less accurate than this do not count (metres).
    pub max_accuracy_m: f64,
    /// Largest gap (seconds) between fixes that still joins them into a track.
    pub max_gap_s: i64,
    /// Minutes without a fix before an on-duty member is silent.
    pub silent_after_min: i64,
    /// How far back queued fixes are accepted.
    pub sync_window: chrono::Duration,
    /// Late fixes one member may send in a day (a budget refilled evenly).
    pub late_fixes_per_day: u32,
    /// Whether a fix without an accuracy counts for coverage.
    pub count_unknown_accuracy: bool,
    /// Plausible speed limits.
    pub max_speed_foot_mps: f64,
    /// Plausible speed limit of vehicle patrols.
    pub max_speed_vehicle_mps: f64,
    /// Device clock lead tolerated before clock_skew.
    pub clock_skew_tolerance_s: i64,
    /// Identical fixes in a row that raise static_repeat.
    pub static_repeat_run: usize,
    /// Days fixes are kept.
    pub retention_days: u32,
    /// Days audit records are kept.
    pub audit_retention_days: u32,
    /// How often the server purges what is past its retention.
    pub purge_interval: Duration,
    /// How often the alert rules are evaluated.
    pub alert_interval: Duration,
    /// Minutes without an eligible fix before a route shift is idle.
    pub route_idle_min: i64,
    /// Minutes an SOS alert stays open after the last SOS fix.
    pub sos_hold_min: i64,
    /// Live events kept for resuming streams.
    pub event_history: usize,
    /// Where alerts are POSTed, if anywhere.
    pub webhook_url: Option<String>,
    /// Secret of the webhook signature.
    pub webhook_secret: Option<Secret>,
    /// XYZ tile URL template of the console's background map, if any.
    pub tile_url: Option<TileUrl>,
    /// The certificate and key to serve HTTPS with; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// The PEM files of the HTTPS certificate chain and its private key. Only their paths are
/// settings: they are read when the server starts (`crate::tls::server_config`), so that
/// commands other than `serve` do not depend on them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// Private key of the first certificate.
    pub key: PathBuf,
}

/// An XYZ tile URL template (`{z}`, `{x}` and `{y}` in an http or https URL), checked
/// once so that the console and its Content-Security-Policy can use it as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileUrl {
    template: String,
    origin: String,
}

impl TileUrl {
    /// Checks a template: http(s), a host, all three placeholders, and no characters that
    /// could break out of a header or a URL.
    pub fn parse(template: &str) -> anyhow::Result<TileUrl> {
        let Some((scheme, rest)) = template.split_once("://") else {
            bail!("tile_url must be an http:// or https:// URL");
        };
        if scheme != "http" && scheme != "https" {
            bail!("tile_url must be an http:// or https:// URL, not {scheme}://");
        }
        let host = &rest[..rest.find('/').unwrap_or(rest.len())];
        if host.is_empty() || host.contains(['@', '{', '}']) {
            bail!("tile_url must name a host (without user name or placeholders)");
        }
        for placeholder in ["{z}", "{x}", "{y}"] {
            if !template.contains(placeholder) {
                bail!("tile_url must contain {placeholder}");
            }
        }
        if template.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '"' | '\\' | ';' | ',' | '\'' | '<' | '>')
        }) {
            bail!("tile_url contains a character that does not belong in a URL");
        }
        Ok(TileUrl {
            template: template.to_owned(),
            origin: format!("{scheme}://{host}"),
        })
    }

    /// The template, as configured.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// `scheme://host[:port]`, for the Content-Security-Policy.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::resolve(SettingsArgs::default(), SettingsFile::default())
            .expect("defaults are valid")
    }
}

impl Settings {
    /// The thresholds of the check-in plausibility rules.
    pub fn thresholds(&self) -> crate::domain::plausibility::Thresholds {
        crate::domain::plausibility::Thresholds {
            max_accuracy_m: self.max_accuracy_m,
            max_speed_foot_mps: self.max_speed_foot_mps,
            max_speed_vehicle_mps: self.max_speed_vehicle_mps,
            clock_skew_tolerance_s: self.clock_skew_tolerance_s,
            static_repeat_run: self.static_repeat_run,
        }
    }

    /// Resolves flags and environment (already merged by clap) over the TOML file and defaults.
    pub fn load(args: SettingsArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading settings file {}", path.display()))?;
                toml::from_str::<SettingsFile>(&text)
                    .with_context(|| format!("parsing settings file {}", path.display()))?
            }
            None => SettingsFile::default(),
        };
        Settings::resolve(args, file)
    }

    fn resolve(args: SettingsArgs, file: SettingsFile) -> anyhow::Result<Settings> {
        let log_format = match args.log_format.or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("log_format must be text or json, not {other:?}"),
        };
        let sqlite_synchronous = match args
            .sqlite_synchronous
            .or(file.sqlite_synchronous)
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("full") => SqliteSynchronous::Full,
            Some("normal") => SqliteSynchronous::Normal,
            Some(other) => bail!("sqlite_synchronous must be full or normal, not {other:?}"),
        };
        let timezone = args
            .timezone
            .or(file.timezone)
            .unwrap_or_else(|| "Asia/Shanghai".to_owned());
        if timezone.parse::<chrono_tz::Tz>().is_err() {
            bail!("timezone {timezone:?} is not an IANA time zone name");
        }
        let nonempty = |s: Option<String>, name: &str| -> anyhow::Result<Option<Secret>> {
            match s {
                Some(s) if s.len() < 16 => bail!("{name} must be at least 16 characters"),
                Some(s) => Ok(Some(Secret(s))),
                None => Ok(None),
            }
        };
        let access_token_ttl_s = args
            .access_token_ttl_s
            .or(file.access_token_ttl_s)
            .unwrap_or(900);
        let refresh_token_ttl_s = args
            .refresh_token_ttl_s
            .or(file.refresh_token_ttl_s)
            .unwrap_or(30 * 24 * 3600);
        if !(30..=86_400).contains(&access_token_ttl_s) {
            bail!("access_token_ttl_s must be between 30 and 86400");
        }
        if refresh_token_ttl_s < access_token_ttl_s {
            bail!("refresh_token_ttl_s must not be shorter than access_token_ttl_s");
        }
        let max_body_bytes = args
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(4 << 20);
        if max_body_bytes < 1024 {
            bail!("max_body_bytes must be at least 1024");
        }
        let db_max_connections = args
            .db_max_connections
            .or(file.db_max_connections)
            .unwrap_or(16);
        if db_max_connections == 0 {
            bail!("db_max_connections must be at least 1");
        }
        let db_lock_timeout_ms = args
            .db_lock_timeout_ms
            .or(file.db_lock_timeout_ms)
            .unwrap_or(10_000);
        // 0 means "never wait" to SQLite but "wait for ever" to PostgreSQL; neither is wanted.
        if !(1..=3_600_000).contains(&db_lock_timeout_ms) {
            bail!("db_lock_timeout_ms must be from 1 to 3600000");
        }
        let positive = |v: f64, name: &str| -> anyhow::Result<f64> {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                bail!("{name} must be a positive number")
            }
        };
        let max_accuracy_m = positive(
            args.max_accuracy_m.or(file.max_accuracy_m).unwrap_or(50.0),
            "max_accuracy_m",
        )?;
        let max_speed_foot_mps = positive(
            args.max_speed_foot_mps
                .or(file.max_speed_foot_mps)
                .unwrap_or(7.0),
            "max_speed_foot_mps",
        )?;
        let max_speed_vehicle_mps = positive(
            args.max_speed_vehicle_mps
                .or(file.max_speed_vehicle_mps)
                .unwrap_or(45.0),
            "max_speed_vehicle_mps",
        )?;
        let max_gap_s = args.max_gap_s.or(file.max_gap_s).unwrap_or(120);
        if !(2..=3600).contains(&max_gap_s) {
            bail!("max_gap_s must be between 2 and 3600");
        }
        let silent_after_min = args
            .silent_after_min
            .or(file.silent_after_min)
            .unwrap_or(10);
        if !(1..=1440).contains(&silent_after_min) {
            bail!("silent_after_min must be between 1 and 1440");
        }
        let sync_window_days = args.sync_window_days.or(file.sync_window_days).unwrap_or(7);
        if !(1..=365).contains(&sync_window_days) {
            bail!("sync_window_days must be between 1 and 365");
        }
        let late_fixes_per_day = args
            .late_fixes_per_day
            .or(file.late_fixes_per_day)
            .unwrap_or(30_000);
        if !(1_000..=10_000_000).contains(&late_fixes_per_day) {
            bail!("late_fixes_per_day must be between 1000 and 10000000");
        }
        let count_unknown_accuracy = args
            .count_unknown_accuracy
            .or(file.count_unknown_accuracy)
            .unwrap_or(false);
        let clock_skew_tolerance_s = args
            .clock_skew_tolerance_s
            .or(file.clock_skew_tolerance_s)
            .unwrap_or(60);
        if !(0..=300).contains(&clock_skew_tolerance_s) {
            bail!("clock_skew_tolerance_s must be between 0 and 300");
        }
        let static_repeat_run = args
            .static_repeat_run
            .or(file.static_repeat_run)
            .unwrap_or(10);
        if static_repeat_run < 2 {
            bail!("static_repeat_run must be at least 2");
        }
        let retention_days = args.retention_days.or(file.retention_days).unwrap_or(90);
        let audit_retention_days = args
            .audit_retention_days
            .or(file.audit_retention_days)
            .unwrap_or(730);
        if retention_days == 0 || audit_retention_days == 0 {
            bail!("retention_days and audit_retention_days must be at least 1");
        }
        let purge_every_s = args.purge_every_s.or(file.purge_every_s).unwrap_or(3600);
        if !(1..=86_400).contains(&purge_every_s) {
            bail!("purge_every_s must be between 1 and 86400");
        }
        let tile_url = args
            .tile_url
            .or(file.tile_url)
            .filter(|t| !t.is_empty())
            .map(|t| TileUrl::parse(&t))
            .transpose()?;
        let alert_every_s = args.alert_every_s.or(file.alert_every_s).unwrap_or(60);
        if !(1..=3600).contains(&alert_every_s) {
            bail!("alert_every_s must be between 1 and 3600");
        }
        let route_idle_min = args.route_idle_min.or(file.route_idle_min).unwrap_or(20);
        if !(1..=1440).contains(&route_idle_min) {
            bail!("route_idle_min must be between 1 and 1440");
        }
        let sos_hold_min = args.sos_hold_min.or(file.sos_hold_min).unwrap_or(30);
        if !(1..=1440).contains(&sos_hold_min) {
            bail!("sos_hold_min must be between 1 and 1440");
        }
        let event_history = args.event_history.or(file.event_history).unwrap_or(10_000);
        if !(100..=1_000_000).contains(&event_history) {
            bail!("event_history must be between 100 and 1000000");
        }
        let webhook_url = args
            .webhook_url
            .or(file.webhook_url)
            .filter(|u| !u.is_empty());
        let webhook_allow_http = args
            .webhook_allow_http
            .or(file.webhook_allow_http)
            .unwrap_or(false);
        if let Some(u) = &webhook_url {
            let https = u.starts_with("https://");
            let http = u.starts_with("http://");
            let allowed = https || (http && webhook_allow_http);
            if !allowed {
                bail!(
                    "webhook_url must be an https:// URL (an http:// one only with webhook_allow_http, for a receiver on a trusted network)"
                );
            }
        }
        let webhook_secret = args
            .webhook_secret
            .or(file.webhook_secret)
            .filter(|s| !s.is_empty())
            .map(Secret);
        let tls = match (
            args.tls_cert
                .or(file.tls_cert)
                .filter(|p| !p.as_os_str().is_empty()),
            args.tls_key
                .or(file.tls_key)
                .filter(|p| !p.as_os_str().is_empty()),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                bail!(
                    "tls_cert (PATROL_TLS_CERT) is set but tls_key (PATROL_TLS_KEY) is not; HTTPS needs both"
                )
            }
            (None, Some(_)) => {
                bail!(
                    "tls_key (PATROL_TLS_KEY) is set but tls_cert (PATROL_TLS_CERT) is not; HTTPS needs both"
                )
            }
        };
        Ok(Settings {
            tls,
            alert_interval: Duration::from_secs(alert_every_s),
            route_idle_min,
            sos_hold_min,
            event_history,
            webhook_url,
            webhook_secret,
            database_url: Secret(
                args.database_url
                    .or(file.database_url)
                    .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            ),
            bind: args
                .bind
                .or(file.bind)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            jwt_secret: nonempty(args.jwt_secret.or(file.jwt_secret), "jwt_secret")?,
            jwt_previous_secret: nonempty(
                args.jwt_previous_secret.or(file.jwt_previous_secret),
                "jwt_previous_secret",
            )?,
            timezone,
            log_format,
            sqlite_synchronous,
            allow_unsafe_durability: args
                .allow_unsafe_durability
                .or(file.allow_unsafe_durability)
                .unwrap_or(false),
            access_token_ttl: Duration::from_secs(access_token_ttl_s),
            refresh_token_ttl: Duration::from_secs(refresh_token_ttl_s),
            max_body_bytes,
            shutdown_timeout: Duration::from_secs(
                args.shutdown_timeout_s
                    .or(file.shutdown_timeout_s)
                    .unwrap_or(30),
            ),
            db_max_connections,
            db_lock_timeout: Duration::from_millis(db_lock_timeout_ms),
            max_accuracy_m,
            max_gap_s,
            silent_after_min,
            sync_window: chrono::Duration::days(i64::from(sync_window_days)),
            late_fixes_per_day,
            count_unknown_accuracy,
            max_speed_foot_mps,
            max_speed_vehicle_mps,
            clock_skew_tolerance_s,
            static_repeat_run,
            retention_days,
            audit_retention_days,
            purge_interval: Duration::from_secs(purge_every_s),
            tile_url,
        })
    }

    /// The database URL with any password replaced by `***`, fit for a log line.
    pub fn database_url_redacted(&self) -> String {
        redact_url(&self.database_url.0)
    }

    /// Whether the database is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        let url = &self.database_url.0;
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }
}

fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let redacted = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{redacted}{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let args = SettingsArgs {
            bind: Some("127.0.0.1:9000".parse().unwrap()),
            ..Default::default()
        };
        let file: SettingsFile =
            toml::from_str("bind = \"0.0.0.0:1\"\ntimezone = \"Europe/Berlin\"").unwrap();
        let s = Settings::resolve(args, file).unwrap();
        assert_eq!(s.bind.port(), 9000);
        assert_eq!(s.timezone, "Europe/Berlin");
        assert_eq!(s.database_url.0, DEFAULT_DATABASE_URL);
        assert_eq!(s.sqlite_synchronous, SqliteSynchronous::Full);
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<SettingsFile>("bnd = 1").is_err());
        let args = SettingsArgs {
            timezone: Some("Mars/Olympus".into()),
            ..Default::default()
        };
        assert!(Settings::resolve(args, SettingsFile::default()).is_err());
        let args = SettingsArgs {
            jwt_secret: Some("short".into()),
            ..Default::default()
        };
        assert!(Settings::resolve(args, SettingsFile::default()).is_err());
    }

    #[test]
    fn a_webhook_is_https_unless_plain_http_is_allowed() {
        let with = |url: &str, allow: Option<bool>| {
            Settings::resolve(
                SettingsArgs {
                    webhook_url: Some(url.into()),
                    webhook_allow_http: allow,
                    ..Default::default()
                },
                SettingsFile::default(),
            )
        };
        assert!(with("https://hooks.intranet/patrol", None).is_ok());
        assert!(with("http://hooks.intranet/patrol", None).is_err());
        assert!(with("http://hooks.intranet/patrol", Some(false)).is_err());
        assert!(with("http://hooks.intranet/patrol", Some(true)).is_ok());
        assert!(with("ftp://hooks.intranet/patrol", Some(true)).is_err());
    }

    #[test]
    fn tile_urls_need_a_host_and_all_three_placeholders() {
        let ok = TileUrl::parse("https://tiles.intranet:8443/osm/{z}/{x}/{y}.png").unwrap();
        assert_eq!(ok.origin(), "https://tiles.intranet:8443");
        assert_eq!(
            ok.template(),
            "https://tiles.intranet:8443/osm/{z}/{x}/{y}.png"
        );
        for bad in [
            "tiles.intranet/{z}/{x}/{y}.png",
            "ftp://tiles/{z}/{x}/{y}.png",
            "https:///{z}/{x}/{y}.png",
            "https://tiles/{z}/{x}.png",
            "https://tiles/{z}/{x}/{y}.png; script-src *",
            "https://user@tiles/{z}/{x}/{y}.png",
            "https://{s}.tiles/{z}/{x}/{y}.png",
        ] {
            assert!(TileUrl::parse(bad).is_err(), "{bad}");
        }
        let args = SettingsArgs {
            tile_url: Some("http://10.0.0.5/{z}/{x}/{y}.png".into()),
            ..Default::default()
        };
        let s = Settings::resolve(args, SettingsFile::default()).unwrap();
        assert_eq!(s.tile_url.unwrap().origin(), "http://10.0.0.5");
        assert!(Settings::default().tile_url.is_none());
    }

    #[test]
    fn tls_needs_both_files_or_neither() {
        let s = Settings::resolve(SettingsArgs::default(), SettingsFile::default()).unwrap();
        assert!(s.tls.is_none());
        let file: SettingsFile =
            toml::from_str("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"").unwrap();
        let args = SettingsArgs {
            tls_key: Some("flag-k.pem".into()),
            ..Default::default()
        };
        let s = Settings::resolve(args, file).unwrap();
        assert_eq!(
            s.tls,
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "flag-k.pem".into()
            })
        );
        let args = SettingsArgs {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        };
        let e = Settings::resolve(args, SettingsFile::default()).unwrap_err();
        assert!(
            e.to_string().contains("tls_key (PATROL_TLS_KEY) is not"),
            "{e}"
        );
        let file: SettingsFile = toml::from_str("tls_key = \"k.pem\"").unwrap();
        let e = Settings::resolve(SettingsArgs::default(), file).unwrap_err();
        assert!(
            e.to_string().contains("tls_cert (PATROL_TLS_CERT) is not"),
            "{e}"
        );
    }

    #[test]
    fn secrets_and_passwords_are_not_printed() {
        let args = SettingsArgs {
            jwt_secret: Some("a-very-secret-signing-key".into()),
            database_url: Some("postgres://patrol:hunter2@db/patrol".into()),
            ..Default::default()
        };
        let s = Settings::resolve(args, SettingsFile::default()).unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("a-very-secret"));
        assert!(!debug.contains("hunter2"));
        assert_eq!(s.database_url_redacted(), "postgres://patrol:***@db/patrol");
    }
}
