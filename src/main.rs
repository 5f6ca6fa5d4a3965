//! The `fastpm` command line (DESIGN.md §2): parses arguments, runs a subcommand, and is the one
//! place where an error becomes a single line on stderr and an exit code (0 ok, 1 runtime
//! failure, 2 bad config or usage).

mod cli_bench;
mod cli_publish;
mod cli_request;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use fastpm::config::{self, Config, ConfigError, LogFormat};
use fastpm::master::{self, StartOptions};

#[derive(Parser)]
#[command(
    name = "fastpm",
    version,
    about = "A FastCGI process manager that shows the kernel's real accept queue"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the master in the foreground.
    Run {
        /// Config file (default: the embedded default config).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Listen backlog for every pool; wins over LISTENQ and the config.
        #[arg(long)]
        backlog: Option<u32>,
    },
    /// Validate a config and print the effective settings.
    Check {
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(long)]
        backlog: Option<u32>,
    },
    /// Read the master's status listener.
    Status {
        #[arg(long, default_value = fastpm::status::client::DEFAULT_URL)]
        url: String,
        /// Live view, redrawn every second: sparklines of the last minute per pool (q quits);
        /// when stdout is not a terminal, the status once.
        #[arg(long)]
        watch: bool,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A worker process (started by the master, never by hand).
    #[command(hide = true)]
    Worker(fastpm::worker::process::WorkerArgs),
    /// An embedded-PHP pool's php parent (started by the master, never by hand).
    #[command(hide = true, name = "php-parent")]
    PhpParent(fastpm::worker::php_parent::PhpParentArgs),
    /// Send one FastCGI request and print the response (like cgi-fcgi).
    Request(cli_request::RequestArgs),
    /// Closed-loop FastCGI load generator; prints a JSON summary.
    Bench(cli_bench::BenchArgs),
    /// Publish a message to the requests held on a channel (through the master's /publish/).
    Publish(cli_publish::PublishArgs),
    /// Convert php-fpm.conf (and the pool files it includes) to fastpm TOML on stdout.
    #[command(name = "import-fpm")]
    ImportFpm {
        /// php-fpm.conf, or pool files; include= lines are followed.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// An error that means "bad config or usage" (exit 2) rather than a runtime failure.
fn is_usage_error(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.is::<ConfigError>()
            || cause.is::<config::BacklogError>()
            || cause.is::<cli_request::UsageError>()
            || cause.is::<cli_bench::BenchUsageError>()
            || cause.is::<cli_publish::PublishUsageError>()
            || cause.is::<master::preflight::PreflightError>()
            || cause.is::<master::runtime_dir::RuntimeDirError>()
            || matches!(
                cause.downcast_ref::<master::MasterError>(),
                Some(master::MasterError::RuntimeDir(_))
            )
            || cause.is::<fastpm::import_fpm::ImportError>()
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("fastpm: {err:#}");
            ExitCode::from(if is_usage_error(&err) { 2 } else { 1 })
        }
    }
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => config::load_file(p)?,
        None => config::load_embedded()?,
    })
}

/// The config and the exact text it was read from (worker processes get the same text).
fn load_with_text(path: Option<&PathBuf>) -> anyhow::Result<(Config, String)> {
    match path {
        None => Ok((
            config::load_embedded()?,
            config::EMBEDDED_DEFAULT.to_string(),
        )),
        Some(p) => match std::fs::read_to_string(p) {
            Ok(text) => Ok((
                config::load_str(&text, config::ConfigSource::File(p.clone()))?,
                text,
            )),
            // load_file words the error (file:0:0, key, cause) like every config error.
            Err(_) => Err(config::load_file(p)
                .err()
                .map(anyhow::Error::from)
                .unwrap_or_else(|| anyhow::anyhow!("cannot read {}", p.display()))),
        },
    }
}

fn listenq() -> Option<String> {
    std::env::var("LISTENQ").ok()
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config, backlog } => {
            // Until the master's handlers exist, a signal must wait rather than end it.
            master::signals::defer_handled_signals().context("cannot block signals")?;
            let (config, text) = load_with_text(config.as_ref())?;
            master::preflight::check(&config)?;
            init_master_logging(&config)?;
            // runtime_dir is checked (and made) by the master as it starts.
            let options = StartOptions {
                cli_backlog: backlog,
                listenq_env: listenq(),
                config_text: std::sync::Arc::new(text),
            };
            master::run(config, options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config, backlog } => {
            let config = load(config.as_ref())?;
            master::preflight::check(&config)?;
            master::runtime_dir::prepare(&config)?;
            let text = config::render_effective(&config, backlog, listenq().as_deref())?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { url, watch, json } => {
            let url = if json {
                fastpm::status::client::with_json(&url)
            } else {
                url
            };
            use std::io::IsTerminal;
            if watch && std::io::stdout().is_terminal() {
                fastpm::status::watch::run(&url).with_context(|| format!("cannot read {url}"))?;
            } else {
                // Not a terminal (a file, a pipe): the status once, as plain text (or JSON).
                let body = fastpm::status::client::fetch(&url)
                    .with_context(|| format!("cannot read {url}"))?;
                print!("{body}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Request(args) => cli_request::run(args),
        Command::Worker(args) => {
            // Until the worker's handlers exist, a signal must wait rather than end it.
            master::signals::defer_handled_signals().context("cannot block signals")?;
            fastpm::worker::process::run(args, |config| {
                fastpm::logs::init_worker(config);
                init_logging(config, None);
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::PhpParent(args) => {
            fastpm::worker::php_parent::run(args, |config| {
                fastpm::logs::init_worker(config);
                init_logging(config, None);
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => cli_bench::run(args),
        Command::Publish(args) => cli_publish::run(args),
        Command::ImportFpm { files } => {
            print!("{}", fastpm::import_fpm::import_files(&files)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The master's logs (`fastpm::logs`): open the configured files, then log to `error_log` or
/// stderr. A file that cannot be opened stops the start, as in php-fpm.
fn init_master_logging(config: &Config) -> anyhow::Result<()> {
    let error_log = fastpm::logs::init_master(config)?;
    if let (Some(_), Some(path)) = (&error_log, &config.global.logs.error_log) {
        // The one line a foreground start shows; the rest goes to the file.
        eprintln!("fastpm: logging to {} (error_log)", path.display());
    }
    init_logging(config, error_log);
    Ok(())
}

/// Log at the config's level (RUST_LOG overrides), as text or JSON, to `error_log` when given,
/// else to stderr (a worker process's stderr is the master's log relay when it has files).
fn init_logging(config: &Config, error_log: Option<fastpm::logs::ErrorLogWriter>) {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config.global.log_level.to_string()));
    use std::io::IsTerminal;
    let ansi = error_log.is_none() && std::io::stderr().is_terminal();
    let writer = match error_log {
        Some(file) => BoxMakeWriter::new(move || file.clone()),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match config.global.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
