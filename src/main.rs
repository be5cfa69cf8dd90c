//! `vswitchd`: run the switch, or check a config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vswitchd::config;

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
    for w in &cfg.warnings {
        eprintln!("vswitchd: warning: {w}");
    }
    match cli.cmd {
        Cmd::CheckConfig { file } => {
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
        Cmd::Run { config } => match vswitchd::daemon::run(cfg, &text, config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vswitchd: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}
