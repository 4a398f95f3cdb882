//! The `genesys-gateway` binary: parse the command line, load the configuration, start logging,
//! run. Everything else lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use genesys_gateway::app::{self, Application};
use std::sync::Arc;

use genesys_gateway::config::{ConfigError, Environment, LogFormat, Settings};
use genesys_gateway::genesys::{self, GenesysEndpoints};
use genesys_gateway::sim::{Fixtures, SimOptions, Simulator};
use genesys_gateway::telemetry::Metrics;

/// mimalloc: on the data-action hot path the system allocator cost ~10 % of the server threads'
/// CPU (malloc/free/consolidate in the profile); see BENCHMARKS.md. Built without transparent
/// huge pages (`no_thp`): with them its arenas were backed by 2 MiB pages, which put ≈ 20 MiB
/// more in the resident set of an idle gateway (65 MiB instead of 40 MiB with 1,000 idle
/// keep-alive connections).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a configuration error (`EX_USAGE` / 64 of sysexits).
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "genesys-gateway", version, about)]
struct Cli {
    /// Config file (default: $GATEWAY_CONFIG, then config/gateway.toml); also accepted before
    /// the subcommand, and by the default `serve`.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve {
        /// Config file (default: $GATEWAY_CONFIG, then config/gateway.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Load and validate the configuration, print a summary.
    CheckConfig {
        /// Config file (default: $GATEWAY_CONFIG, then config/gateway.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the Genesys Cloud simulator alone.
    Sim(SimArgs),
    /// Mint a local test token for an issuer that has a sandbox `private_key_file` (the
    /// shipped `legacy` issuer does) and print it.
    Token {
        /// The `[[jwt_issuers]]` name.
        #[arg(long)]
        issuer: String,
        /// Config file (default: $GATEWAY_CONFIG, then config/gateway.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The token's `sub`.
        #[arg(long, default_value = "sandbox")]
        subject: String,
        /// Lifetime in seconds (at most the issuer's `max_token_lifetime_s`).
        #[arg(long, default_value_t = 600)]
        ttl_s: u64,
    },
    /// Data actions in Genesys.
    Actions {
        #[command(subcommand)]
        command: ActionsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ActionsCommand {
    /// Provision the configured data actions into Genesys (integration, credential, actions),
    /// then test each that has an `example_input`; prints the report as JSON. Exits 0 when
    /// every action is published and passed its test, 1 when one did not (the report says
    /// which), 64 on a configuration error.
    Publish {
        /// Config file (default: $GATEWAY_CONFIG, then config/gateway.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Report what would change; write nothing, run no tests.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, clap::Args)]
struct SimArgs {
    /// Address to listen on (port 0 picks a free port, logged).
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Fixtures file (JSON: clients, users, queues); kinds present replace the built-in ones.
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, default_value_t = 86_400)]
    token_lifetime_s: u64,
    /// Requests per token per minute before 429 (0: no limit).
    #[arg(long, default_value_t = 300)]
    rate_limit_per_min: u32,
    /// Notifications WebSocket heartbeat interval, in seconds.
    #[arg(long, default_value_t = 30)]
    heartbeat_s: u64,
    /// Delay between `v2.system.socket_closing` and the close, in seconds.
    #[arg(long, default_value_t = 5)]
    socket_closing_delay_s: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Environment::from_process();
    let top = cli.config;
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => serve(config.or(top), &env),
        Command::CheckConfig { config } => check_config(config.or(top), &env),
        Command::Sim(args) => run_sim(args),
        Command::Token {
            issuer,
            config,
            subject,
            ttl_s,
        } => mint_token(config.or(top), &issuer, &subject, ttl_s, &env),
        Command::Actions {
            command: ActionsCommand::Publish { config, dry_run },
        } => publish_actions(config.or(top), dry_run, &env),
    }
}

fn run_sim(args: SimArgs) -> ExitCode {
    if let Err(err) = genesys_gateway::telemetry::init(LogFormat::Text) {
        eprintln!("{err}");
        return ExitCode::FAILURE;
    }
    let fixtures = match args.fixtures.as_deref().map(Fixtures::from_file) {
        None => Fixtures::builtin(),
        Some(Ok(f)) => f,
        Some(Err(err)) => {
            eprintln!("{err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.heartbeat_s == 0 {
        eprintln!("--heartbeat-s must be at least 1");
        return ExitCode::from(EXIT_CONFIG);
    }
    let options = SimOptions {
        token_lifetime: Duration::from_secs(args.token_lifetime_s),
        rate_limit_per_min: args.rate_limit_per_min,
        heartbeat: Duration::from_secs(args.heartbeat_s),
        socket_closing_delay: Duration::from_secs(args.socket_closing_delay_s),
        fixtures,
    };
    let runtime = match runtime("gateway-sim") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        match Simulator::start(args.listen, options).await {
            Ok(sim) => {
                tracing::info!(url = %sim.base_url(), "Genesys Cloud simulator listening");
                app::shutdown_signal().await;
                sim.shutdown().await;
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!(
                    "genesys-gateway sim: cannot listen on {}: {err}",
                    args.listen
                );
                ExitCode::FAILURE
            }
        }
    })
}

/// The single-threaded runtime of the main thread (the server threads have their own).
fn runtime(name: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .map_err(|err| {
            eprintln!("cannot start the runtime: {err}");
            ExitCode::FAILURE
        })
}

/// `token`: prints a token signed with the issuer's sandbox private key; exit 64 on a
/// configuration error, 1 when this issuer cannot mint.
fn mint_token(
    config: Option<PathBuf>,
    issuer: &str,
    subject: &str,
    ttl_s: u64,
    env: &Environment,
) -> ExitCode {
    let settings = match load(config, env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match genesys_gateway::auth::jwt::mint::mint(
        &settings.jwt_issuers,
        issuer,
        &settings.source,
        subject,
        ttl_s,
        std::time::SystemTime::now(),
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("cannot mint a token: {err}");
            ExitCode::FAILURE
        }
    }
}

fn load(config: Option<PathBuf>, env: &Environment) -> Result<Settings, ExitCode> {
    let path = Settings::locate(config.as_deref(), env);
    Settings::load(&path, env).map_err(|err| {
        eprintln!("{err}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// `check-config`: every problem of the file, whatever its kind, each once, in file order:
/// the loader's and the rules', then what `serve` would find building the upstreams and the
/// actions (without binding or opening anything).
fn check_config(config: Option<PathBuf>, env: &Environment) -> ExitCode {
    let path = Settings::locate(config.as_deref(), env);
    let mut report = Settings::load_report(&path, env);
    if let Some(settings) = report.settings() {
        let mut found = genesys_gateway::data_actions::check(settings);
        let genesys = GenesysEndpoints::from_settings(&settings.genesys);
        if let Err(problems) =
            genesys::build_upstreams(settings, &genesys, Arc::new(Metrics::new()))
        {
            found.extend(problems);
        }
        report.add(found);
    }
    match report.into_result() {
        Ok(settings) => {
            println!("{}: configuration is valid", settings.source.file.display());
            print!("{}", settings.summary());
            // What is valid but would surprise: printed after the summary, on stderr.
            let names = settings.action_names();
            for w in genesys_gateway::data_actions::publish::contract_warnings(&settings) {
                eprintln!(
                    "{}: warning: {}: {}",
                    settings.source.file.display(),
                    w.label(&names),
                    w.message
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn serve(config: Option<PathBuf>, env: &Environment) -> ExitCode {
    let settings = match load(config, env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Err(err) = genesys_gateway::telemetry::init(settings.telemetry.log_format) {
        eprintln!("{err}");
        return ExitCode::FAILURE;
    }
    let runtime = match runtime("gateway-main") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async move {
        // Signal handlers first: a SIGTERM or SIGHUP during startup is never taken for its
        // default action (the end of the process).
        let stop_signal = app::shutdown_signal();
        let app = Application::builder(settings)
            .reload_on_sighup()
            .build()
            .await?;
        let handle = app.shutdown_handle();
        tokio::spawn(async move {
            stop_signal.await;
            handle.shutdown();
        });
        app.run_until_stopped().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A problem in what the file describes (a schema, a mapping, an upstream URL) found
        // while building: reported like `check-config` does, with its exit status.
        Err(err) if err.downcast_ref::<ConfigError>().is_some() => {
            eprintln!("{}", err.downcast_ref::<ConfigError>().expect("checked"));
            ExitCode::from(EXIT_CONFIG)
        }
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "gateway failed");
            eprintln!("genesys-gateway: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn publish_actions(config: Option<PathBuf>, dry_run: bool, env: &Environment) -> ExitCode {
    use genesys_gateway::data_actions::publish::{self, PublishError, PublishMode};
    let mut settings = match load(config, env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let problems = genesys_gateway::data_actions::check(&settings);
    if !problems.is_empty() {
        eprintln!("{}", ConfigError::for_settings(&settings, problems));
        return ExitCode::from(EXIT_CONFIG);
    }
    // The report goes to stdout; logs go to stderr.
    if let Err(err) = genesys_gateway::telemetry::init_with_writer(
        settings.telemetry.log_format,
        "warn",
        std::io::stderr,
    ) {
        eprintln!("{err}");
        return ExitCode::FAILURE;
    }
    let runtime = match runtime("gateway-publish") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let mode = if dry_run {
        PublishMode::DryRun
    } else {
        PublishMode::Apply
    };
    // The gateway of this configuration serves `server.listen` (unknown with port 0): in
    // sandbox mode an unset `public_url` is that address, and a `public_url` on this machine
    // that does not lead there is warned about.
    let listen = settings.server.listen_addr();
    let served = (listen.port() != 0).then_some(listen);
    if settings.genesys.simulate
        && settings.data_actions.public_url.is_none()
        && let Some(served) = served
    {
        settings.data_actions.public_url = Some(publish::sandbox_public_url(served));
    }
    runtime.block_on(async move {
        let simulator = if settings.genesys.simulate {
            match Simulator::start(([127, 0, 0, 1], 0).into(), SimOptions::default()).await {
                Ok(sim) => {
                    app::simulate_genesys(&mut settings, &sim);
                    tracing::warn!(
                        url = %sim.base_url(),
                        "[genesys] simulate = true: publishing into a throwaway in-process \
                         simulator, not a real Genesys Cloud org"
                    );
                    Some(sim)
                }
                Err(err) => {
                    eprintln!("genesys-gateway: cannot start the simulator: {err}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        let store = match genesys_gateway::store::Store::connect(
            &settings.store.url,
            &settings.source.base_dir,
        )
        .await
        {
            Ok(store) => store,
            Err(err) => {
                eprintln!("genesys-gateway: cannot open the store: {err}");
                return ExitCode::FAILURE;
            }
        };
        let result =
            publish::publish_settings(&settings, mode, Some((&store, "cli")), served).await;
        store.close().await;
        if let Some(sim) = simulator {
            sim.shutdown().await;
        }
        match result {
            Ok(report) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
                if report.success {
                    ExitCode::SUCCESS
                } else {
                    eprintln!(
                        "genesys-gateway actions publish: not every action was published and \
                         passed its test: {}",
                        report.failed().join(", ")
                    );
                    ExitCode::FAILURE
                }
            }
            Err(PublishError::Config(problems)) => {
                eprintln!("{}", ConfigError::for_settings(&settings, problems));
                ExitCode::from(EXIT_CONFIG)
            }
            Err(err) => {
                eprintln!("genesys-gateway actions publish: {err}");
                ExitCode::FAILURE
            }
        }
    })
}
