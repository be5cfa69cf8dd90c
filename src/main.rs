//! `vswitchd`: run the switch, or check a config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vswitchd::config;
use vswitchd::state::StateFile;

#[derive(Parser)]
#[command(
    name = "vswitchd",
    version,
    about = "Userspace DPDK vSwitch: every container gets its own NIC"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the switch until SIGINT/SIGTERM (SIGUSR1 prints stats).
    Run {
        /// TOML config; without it the embedded demo config (configs/demo.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config without touching DPDK; exit 1 on the first error.
    CheckConfig {
        /// TOML config.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let text = match &cli.cmd {
        Cmd::Run { config: Some(f) } | Cmd::CheckConfig { file: f } => {
            config::read(f).map(|t| (f.display().to_string(), t))
        }
        Cmd::Run { config: None } => Ok((
            config::DEFAULT_CONFIG_NAME.to_string(),
            config::DEFAULT_CONFIG.to_string(),
        )),
    };
    let (name, text) = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vswitchd: invalid config: {e}");
            return ExitCode::from(1);
        }
    };
    let cfg = match config::parse(&name, &text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vswitchd: invalid config: {e}");
            return ExitCode::from(1);
        }
    };
    // `run` logs through tracing from here on (check-config just prints).
    let running = matches!(cli.cmd, Cmd::Run { .. });
    if running {
        vswitchd::log::init(&cfg.log);
    }
    for w in &cfg.warnings {
        if running {
            tracing::warn!("{w}");
        } else {
            eprintln!("vswitchd: warning: {w}");
        }
    }
    match cli.cmd {
        Cmd::CheckConfig { file } => {
            // A config may be checked on another machine than its own: a
            // warning here, an error at `run`.
            if let Some(m) = vswitchd::daemon::missing_core(&cfg) {
                eprintln!("vswitchd: warning: {m}");
            }
            println!(
                "{}: ok ({} bridges, {} ports, {} workers, {} security groups, {} QoS policies)",
                file.display(),
                cfg.bridges.len(),
                cfg.ports.len(),
                cfg.workers.cores.len(),
                cfg.security_groups.len(),
                cfg.qos_policies.len()
            );
            ExitCode::SUCCESS
        }
        Cmd::Run { config } => {
            let state = StateFile::new(&cfg.control.state_file, &text);
            let (cfg, text) = match state.load() {
                Ok(None) => (cfg, text),
                Ok(Some(saved)) => {
                    let from = state.path().display().to_string();
                    match config::parse(&from, &saved.text) {
                        Ok(c) => {
                            tracing::info!("starting from the state file {from} (the running config at its last change)");
                            if saved.config_changed {
                                tracing::warn!(
                                    "{name} changed since {from} was saved; the state wins \
                                     (remove {from} to start from {name})"
                                );
                            }
                            (c, saved.text)
                        }
                        Err(e) => {
                            tracing::error!("invalid state file: {e} (fix or remove it)");
                            return ExitCode::from(1);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!("cannot read the state file {}: {e}", state.path().display());
                    return ExitCode::from(1);
                }
            };
            run(cfg, &text, config, state)
        }
    }
}

fn run(cfg: config::Config, text: &str, config: Option<PathBuf>, state: StateFile) -> ExitCode {
    match vswitchd::daemon::run(cfg, text, config, state) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(2)
        }
    }
}
