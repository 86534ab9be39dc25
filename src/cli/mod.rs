//! The `fepha` command line. Every command but `run` and `demo` talks to the local node's
//! admin API, found through node.toml.

mod call;
mod config_cmd;
mod demo;
mod members;
mod output;
mod status;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::NodeConfig;

#[derive(Debug, Parser)]
#[command(
    name = "fepha",
    version,
    about = "Clustered front-end processor for power SCADA"
)]
pub struct Cli {
    /// The local node's configuration file.
    #[arg(
        short = 'c',
        long = "config",
        env = "FEPHA_CONFIG",
        default_value = "/etc/fepha/node.toml",
        global = true
    )]
    pub config: PathBuf,
    /// How long a command waits for the cluster to have a leader (e.g. 500ms, 10s, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node (the daemon).
    Run,
    /// Bootstrap a new one-member cluster on the running local node.
    Init,
    /// Make the running local node join the cluster that PEER belongs to.
    Join {
        /// Admin address (IP:port) of any member of the cluster.
        #[arg(long)]
        peer: String,
    },
    /// Remove the local node, or the named one, from the cluster.
    Leave {
        #[arg(long)]
        node: Option<String>,
    },
    /// This node's view of the cluster.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The members of the cluster.
    Members {
        #[arg(long)]
        json: bool,
    },
    /// The site configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Start a whole local site on loopback: three nodes, until Ctrl-C.
    Demo {
        /// Keep the site's files here instead of a temporary directory (not removed on exit).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Store FILE as the new site configuration.
    Apply { file: PathBuf },
    /// Print the site configuration as this node has applied it.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Past versions of the site configuration.
    History {
        #[arg(long)]
        json: bool,
    },
}

/// Runs one command; errors are reported by the caller.
pub fn main(cli: Cli) -> anyhow::Result<()> {
    let level = match cli.command {
        Command::Run | Command::Demo { .. } => "info",
        _ => "warn",
    };
    init_tracing(level);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let timeout = cli.timeout;
    if let Command::Demo { dir } = cli.command {
        return demo::run(dir).await;
    }
    let config = NodeConfig::load(&cli.config)?;
    match cli.command {
        Command::Run => Ok(crate::node::run(config).await?),
        Command::Init => members::init(&config, timeout).await,
        Command::Join { peer } => members::join(&config, &peer, timeout).await,
        Command::Leave { node } => members::leave(&config, node, timeout).await,
        Command::Status { json } => status::status(&config, json).await,
        Command::Members { json } => status::members(&config, json).await,
        Command::Config(ConfigCommand::Apply { file }) => {
            config_cmd::apply(&config, &file, timeout).await
        }
        Command::Config(ConfigCommand::Show { json }) => config_cmd::show(&config, json).await,
        Command::Config(ConfigCommand::History { json }) => {
            config_cmd::history(&config, json).await
        }
        Command::Demo { .. } => unreachable!("handled above"),
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FEPHA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},openraft=warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 10s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?} is not a duration like 500ms, 10s or 2m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
