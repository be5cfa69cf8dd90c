//! `vswitchctl`: talk to a running vswitchd over its control socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vswitchd::control::{request, Request};
use vswitchd::stats::Report;

#[derive(Parser)]
#[command(name = "vswitchctl", version, about = "Control a running vswitchd")]
struct Cli {
    /// Control socket of the vswitchd to talk to.
    #[arg(long, short, default_value = "/run/vswitchd/vswitchd.sock")]
    socket: PathBuf,
    /// Print the raw JSON answer.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    noun: Noun,
}

#[derive(Subcommand)]
enum Noun {
    /// Per-port and per-worker counters.
    Stats,
    /// Ports.
    Port {
        #[command(subcommand)]
        verb: PortVerb,
    },
    /// VXLAN tunnels: remote VTEPs per VNI, underlay neighbours.
    Tunnel {
        #[command(subcommand)]
        verb: TunnelVerb,
    },
    /// The MAC learning tables.
    Fdb {
        #[command(subcommand)]
        verb: FdbVerb,
    },
}

#[derive(Subcommand)]
enum PortVerb {
    /// List ports.
    List,
}

#[derive(Subcommand)]
enum TunnelVerb {
    /// List tunnel ports and neighbours.
    List,
}

#[derive(Subcommand)]
enum FdbVerb {
    /// Show learned MACs.
    Show {
        /// Only this bridge.
        bridge: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let req = match &cli.noun {
        Noun::Stats => Request::Stats,
        Noun::Port {
            verb: PortVerb::List,
        } => Request::PortList,
        Noun::Tunnel {
            verb: TunnelVerb::List,
        } => Request::TunnelList,
        Noun::Fdb {
            verb: FdbVerb::Show { bridge },
        } => Request::FdbShow {
            bridge: bridge.clone(),
        },
    };
    let resp = match request(&cli.socket, &req) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vswitchctl: {e}");
            return ExitCode::from(2);
        }
    };
    if !resp.ok {
        eprintln!("vswitchctl: {}", resp.error.unwrap_or_default());
        return ExitCode::from(1);
    }
    let result = resp.result.unwrap_or_default();
    if !cli.json {
        if let (Noun::Stats, Ok(report)) =
            (&cli.noun, serde_json::from_value::<Report>(result.clone()))
        {
            print!("{}", report.to_table());
            return ExitCode::SUCCESS;
        }
    }
    println!("{}", serde_json::to_string_pretty(&result).expect("json"));
    ExitCode::SUCCESS
}
