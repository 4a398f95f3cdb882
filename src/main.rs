//! The `genesys-gateway` binary: parse the command line, load the configuration, start logging,
//! run. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use genesys_gateway::app::{self, Application};
use genesys_gateway::config::{Environment, Settings};

/// Exit status for a configuration error (`EX_USAGE` / 64 of sysexits).
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "genesys-gateway", version, about)]
struct Cli {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Environment::from_process();
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => serve(config, &env),
        Command::CheckConfig { config } => check_config(config, &env),
    }
}

fn load(config: Option<PathBuf>, env: &Environment) -> Result<Settings, ExitCode> {
    let path = Settings::locate(config.as_deref(), env);
    Settings::load(&path, env).map_err(|err| {
        eprintln!("{err}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check_config(config: Option<PathBuf>, env: &Environment) -> ExitCode {
    match load(config, env) {
        Ok(settings) => {
            println!("{}: configuration is valid", settings.source.file.display());
            print!("{}", settings.summary());
            ExitCode::SUCCESS
        }
        Err(code) => code,
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
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("gateway-main")
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let app = Application::build(settings).await?;
        let handle = app.shutdown_handle();
        tokio::spawn(genesys_gateway::data_actions::reload::reload_on_sighup(
            app.reloader(),
        ));
        tokio::spawn(async move {
            app::shutdown_signal().await;
            handle.shutdown();
        });
        app.run_until_stopped().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "gateway failed");
            eprintln!("genesys-gateway: {err:#}");
            ExitCode::FAILURE
        }
    }
}
