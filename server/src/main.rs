//! `patrol`: the service and its administration commands.

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};
use patrol_server::{Settings, cli, db, settings::SettingsArgs, telemetry};

/// Patrol check-ins and duty coverage for a city district.
#[derive(Parser)]
#[command(name = "patrol", version, about)]
struct Cli {
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (migrates the database first)
    Serve {
        /// Load the demo district first if the database is empty
        #[arg(long)]
        demo: bool,
    },
    /// Apply database migrations and exit
    Migrate,
    /// Manage members
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Delete fixes, audit records and failed logins past their retention (the server also does this, hourly by default)
    Purge,
    /// Coverage maintenance
    Coverage {
        #[command(subcommand)]
        command: CoverageCommand,
    },
    /// Load the demo district (units, 18 routes, 15 checkpoints, 20 kiosks, 30 areas, teams, members, rosters, a week of simulated fixes with planted failures) into an empty database
    Demo {
        /// Days before today to roster and simulate (the planted failures need 3)
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(0..=patrol_server::demo::MAX_PAST_DAYS as i64))]
        past_days: u32,
        /// Load the organisation and the rosters only, without simulated fixes
        #[arg(long)]
        no_fixes: bool,
    },
    /// Import data from files
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Print the OpenAPI document (the content of api-spec/openapi.json)
    Openapi,
    /// Make a certificate for serving HTTPS (PATROL_TLS_CERT, PATROL_TLS_KEY)
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Write patrol-cert.pem and patrol-key.pem for the server, and patrol-ca.pem for phones to install: a certificate for --host signed by a one-off CA whose key is not kept
    SelfSigned {
        /// DNS name or IP address phones use to reach the server (repeat for more)
        #[arg(long = "host", value_name = "NAME_OR_IP", required = true)]
        hosts: Vec<String>,
        /// Directory to write into (made if missing)
        #[arg(long, value_name = "DIR", default_value = ".")]
        out_dir: std::path::PathBuf,
        /// Days the certificate is valid; iOS refuses more than 825
        #[arg(long, value_name = "N", default_value_t = patrol_server::tls::MAX_APPLE_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// Replace files that exist already
        #[arg(long)]
        force: bool,
    },
    /// Write a new private key (patrol-key.pem) and a certificate signing request (patrol.csr) for --host, for the network's own CA to sign
    Csr {
        /// DNS name or IP address phones use to reach the server (repeat for more)
        #[arg(long = "host", value_name = "NAME_OR_IP", required = true)]
        hosts: Vec<String>,
        /// Directory to write into (made if missing)
        #[arg(long, value_name = "DIR", default_value = ".")]
        out_dir: std::path::PathBuf,
        /// Replace files that exist already
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum CoverageCommand {
    /// Recompute the coverage of every shift starting in [--from, --to) from raw fixes and store it (after a settings change)
    Rebuild {
        /// Start, RFC 3339
        #[arg(long)]
        from: chrono::DateTime<chrono::Utc>,
        /// End, RFC 3339
        #[arg(long)]
        to: chrono::DateTime<chrono::Utc>,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Upsert posts by code from a GeoJSON FeatureCollection (properties: code, name, kind, unit, optional requirement fields, datum)
    Posts {
        /// The GeoJSON file
        file: std::path::PathBuf,
        /// Datum of features that name none: wgs84, gcj02 or bd09 [default: wgs84]
        #[arg(long)]
        datum: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a member; the password comes from PATROL_PASSWORD, else it is prompted for
    Add {
        /// Login name (lower-case letters, digits, '.', '_', '-')
        username: String,
        /// admin, commander, patrol_officer, kiosk_officer or volunteer
        #[arg(long)]
        role: String,
        /// Code of the member's unit (required for every role but admin)
        #[arg(long, value_name = "CODE")]
        unit: Option<String>,
        /// Name shown to others (default: the username)
        #[arg(long, value_name = "NAME")]
        display_name: Option<String>,
    },
}

/// jemalloc instead of the C library's allocator. With glibc's default of eight arenas per
/// core, memory freed on another thread than it was allocated on stayed with the process:
/// the coverage benchmark at scale 0.1 peaked at 500 MiB, against 183 MiB with glibc held
/// to two arenas. jemalloc returns freed memory on a timer.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        println!("{}", patrol_server::openapi().to_pretty_json()?);
        return Ok(());
    }
    // Before the settings: PATROL_TLS_CERT may already name the files this writes.
    if let Command::Tls { command } = cli.command {
        return tls_command(command);
    }
    let settings = Settings::load(cli.settings)?;
    telemetry::init(settings.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli.command, settings))
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve { demo } => {
            let bind = settings.bind;
            // Read before the database is touched, so that a bad certificate stops at once.
            let tls = match &settings.tls {
                Some(files) => Some(patrol_server::tls::server_config(files)?),
                None => None,
            };
            tracing::info!(database = %settings.database_url_redacted(), "starting");
            let state = patrol_server::start(settings).await?;
            if demo {
                if patrol_server::demo::is_empty(&state).await? {
                    let started = std::time::Instant::now();
                    let summary = patrol_server::demo::load(&state).await?;
                    eprintln!("{summary}");
                    eprintln!("loaded in {:.1} s", started.elapsed().as_secs_f64());
                } else {
                    tracing::info!("the database is not empty; --demo loads nothing");
                }
            }
            let listener = tokio::net::TcpListener::bind(bind)
                .await
                .with_context(|| format!("listening on {bind}"))?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            tracing::info!("listening on {scheme}://{}", listener.local_addr()?);
            patrol_server::serve_with(listener, state, tls, shutdown_signal()).await?;
            tracing::info!("stopped");
        }
        Command::Migrate => {
            let db = db::connect(&settings).await?;
            db::migrate(&db).await?;
            println!("migrations applied to {}", settings.database_url_redacted());
        }
        Command::User {
            command:
                UserCommand::Add {
                    username,
                    role,
                    unit,
                    display_name,
                },
        } => {
            let password = match std::env::var("PATROL_PASSWORD") {
                Ok(p) => p,
                Err(_) => prompt_password()?,
            };
            let state = patrol_server::start(settings).await?;
            let id = cli::add_user(
                &state,
                &username,
                &role,
                unit.as_deref(),
                display_name.as_deref(),
                password,
            )
            .await?;
            println!("added {username} ({role}) with id {id}");
        }
        Command::Purge => {
            let db = db::connect(&settings).await?;
            db::migrate(&db).await?;
            let purged = patrol_server::retention::purge(&db, &settings).await?;
            println!(
                "deleted {} fixes older than {} days, {} audit records older than {} days and {} failed logins older than {} hours",
                purged.fixes,
                settings.retention_days,
                purged.audit_records,
                settings.audit_retention_days,
                purged.login_failures,
                patrol_server::auth::throttle::FAILURE_MEMORY.num_hours()
            );
        }
        Command::Coverage {
            command: CoverageCommand::Rebuild { from, to },
        } => {
            anyhow::ensure!(to > from, "--to must be after --from");
            let state = patrol_server::start(settings).await?;
            let bar = indicatif::ProgressBar::new(0);
            let started = std::time::Instant::now();
            let total = patrol_server::coverage::rebuild(&state, from, to, |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })
            .await
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
            bar.finish_and_clear();
            println!(
                "rebuilt the coverage of {total} shifts in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        Command::Demo {
            past_days,
            no_fixes,
        } => {
            let state = patrol_server::start(settings).await?;
            let started = std::time::Instant::now();
            let options = patrol_server::demo::DemoOptions {
                past_days,
                fixes: !no_fixes,
            };
            let summary = patrol_server::demo::load_with(&state, options).await?;
            println!("{summary}");
            println!("loaded in {:.1} s", started.elapsed().as_secs_f64());
        }
        Command::Import {
            command: ImportCommand::Posts { file, datum },
        } => {
            let state = patrol_server::start(settings).await?;
            let report = cli::import_posts(&state, &file, datum.as_deref()).await?;
            println!(
                "{} created, {} updated, {} rejected",
                report.created, report.updated, report.rejected
            );
            for r in report.results.iter().filter(|r| !r.errors.is_empty()) {
                let reasons: Vec<String> = r
                    .errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect();
                println!(
                    "  feature {} ({}): {}",
                    r.index,
                    r.code.as_deref().unwrap_or("no code"),
                    reasons.join("; ")
                );
            }
            if report.rejected > 0 {
                std::process::exit(1);
            }
        }
        Command::Openapi | Command::Tls { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
    Ok(())
}

fn tls_command(command: TlsCommand) -> anyhow::Result<()> {
    use patrol_server::tls;

    let (written, next) = match command {
        TlsCommand::SelfSigned {
            hosts,
            out_dir,
            days,
            force,
        } => {
            let written = tls::write_self_signed(&out_dir, &hosts, days, force)?;
            let next = format!(
                "Install {} on each phone as a CA certificate (README: HTTPS for phones).",
                out_dir.join(tls::CA_FILE).display()
            );
            (written, next)
        }
        TlsCommand::Csr {
            hosts,
            out_dir,
            force,
        } => {
            let written = tls::write_signing_request(&out_dir, &hosts, force)?;
            let next = format!(
                "Have the network's CA sign {}; save the certificate it returns, followed by any intermediate certificates, as {}.",
                out_dir.join(tls::CSR_FILE).display(),
                out_dir.join(tls::CERT_FILE).display()
            );
            (written, next)
        }
    };
    for path in &written {
        println!("wrote {}", path.display());
    }
    println!("{next}");
    let dir = written[0].parent().unwrap_or(std::path::Path::new("."));
    println!("Then start the server with (0.0.0.0 listens on every interface, for the phones):");
    println!(
        "  PATROL_TLS_CERT={} PATROL_TLS_KEY={} PATROL_BIND=0.0.0.0:8443 patrol serve",
        dir.join(tls::CERT_FILE).display(),
        dir.join(tls::KEY_FILE).display()
    );
    Ok(())
}

fn prompt_password() -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "set PATROL_PASSWORD or run this command in a terminal to be asked for the password"
        );
    }
    let first = rpassword::prompt_password("Password: ")?;
    let second = rpassword::prompt_password("Password again: ")?;
    if first != second {
        anyhow::bail!("the two passwords differ");
    }
    Ok(first)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
