//! The `fepha` command line. Every command but `run` and `demo` talks to the local node's
//! admin API, found through node.toml.

mod call;
mod certs;
mod config_cmd;
mod demo;
mod iec104;
mod members;
mod output;
mod point;
mod recover;
mod rtu;
mod snapshot;
mod status;
mod table;
mod warnings;
mod watch;

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
    /// An operator identity (from `fepha cert issue-operator`) to use instead of the node's.
    #[arg(long, global = true, value_name = "DIR")]
    pub identity: Option<PathBuf>,
    /// The admin address of the node to talk to (with --identity; default: the first node
    /// the identity knows).
    #[arg(long, global = true, value_name = "ADDR")]
    pub admin: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node (the daemon).
    Run,
    /// Bootstrap a new one-member cluster on the running local node.
    Init,
    /// Make the running local node join a cluster: with a token from `fepha token create`, or
    /// with a member's address and fingerprint (then an operator runs `fepha cert allow`).
    Join {
        #[arg(long, conflicts_with_all = ["peer", "fingerprint"])]
        token: Option<String>,
        /// Admin address (IP:port) of a member of the cluster.
        #[arg(long, requires = "fingerprint")]
        peer: Option<String>,
        /// That member's certificate fingerprint (`fepha status` shows it).
        #[arg(long, requires = "peer")]
        fingerprint: Option<String>,
    },
    /// Remove the local node, or the named one, from the cluster.
    Leave {
        #[arg(long)]
        node: Option<String>,
    },
    /// This node's view of the cluster: every member's state, progress, versions and RTUs,
    /// and warnings (members down, no fault tolerance left, version skew).
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// The members of the cluster.
    Members {
        #[arg(long)]
        json: bool,
    },
    /// The site configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// One-time join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// RTU ownership.
    #[command(subcommand)]
    Rtu(RtuCommand),
    /// Point values, and commands.
    #[command(subcommand)]
    Point(PointCommand),
    /// The certificates the cluster trusts.
    #[command(subcommand)]
    Cert(CertCommand),
    /// The IEC 104 forwarders' master connections.
    #[command(subcommand)]
    Iec104(Iec104Command),
    /// Disaster recovery: save the cluster's state to a file, or start a new cluster from one.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Disaster recovery for a site whose other members are gone for good. Run on the
    /// survivor's box while its node is stopped.
    Recover {
        /// Make this node the only member of its cluster, keeping its state.
        #[arg(long, required = true)]
        force_single_node: bool,
        /// Confirm that every other member is down for good.
        #[arg(long)]
        yes_the_others_are_down: bool,
    },
    /// The restores and forced recoveries recorded in the replicated state.
    Audit {
        #[arg(long)]
        json: bool,
    },
    /// Start a whole local site on loopback: three nodes, until Ctrl-C.
    Demo {
        /// Keep the site's files here instead of a temporary directory (not removed on exit).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Simulated field devices, to test and demonstrate against.
    #[command(subcommand)]
    Sim(SimCommand),
}

/// `--watch` and `--interval`, for the listings that can be watched.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// Redraw in place every --interval, until Ctrl-C; a node that does not answer is shown
    /// so and asked again.
    #[arg(long, conflicts_with = "json")]
    pub watch: bool,
    /// How often --watch redraws (e.g. 500ms, 2s).
    #[arg(long, default_value = watch::DEFAULT_INTERVAL, value_parser = parse_duration, requires = "watch")]
    pub interval: Duration,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// A Modbus TCP device serving the registers of a profile, until SIGTERM or Ctrl-C.
    Modbus {
        /// Address to listen on (IP:port).
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The device profile (see examples/sim-profile.toml).
        #[arg(long)]
        profile: PathBuf,
        /// Append one JSON line per request here.
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// An IEC 104 controlled station serving the points of a profile, until SIGTERM or Ctrl-C.
    Iec104 {
        /// Address to listen on (IP:port).
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The station profile (see examples/sim-iec104-profile.toml).
        #[arg(long)]
        profile: PathBuf,
        /// Append one JSON line per frame sent, acknowledgement and command here.
        #[arg(long)]
        log: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check FILE here, with no node (the same check as `config apply`); exits non-zero on
    /// any problem.
    Check { file: PathBuf },
    /// Store FILE as the new site configuration (every node switches at the same log index).
    Apply {
        file: PathBuf,
        /// Only check FILE and say what it would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// What FILE would change against the applied configuration.
    Diff { file: PathBuf },
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

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Write a consistent copy of the cluster's state, as this member has applied it, to FILE.
    Save { file: PathBuf },
    /// Start a new one-node cluster from FILE. Run on a box whose node is stopped and was
    /// never initialised; start the node afterwards.
    Restore { file: PathBuf },
    /// Check FILE and say what it would restore.
    Show { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum RtuCommand {
    /// Every RTU's owner, lease epoch and time left (as the leader sees it), and who reaches it.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// Hand an RTU to another node on purpose (the old owner lets go first).
    Move {
        rtu: String,
        /// The node name.
        #[arg(long)]
        to: String,
        /// Move it even if that node does not report the RTU reachable.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PointCommand {
    /// Every point's value, quality, time and the node that read it, as this node has them.
    List {
        /// Only this RTU's points.
        #[arg(long)]
        rtu: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Send a command (single/double command: on/off; setpoint: a number) and wait for its
    /// outcome from the RTU's owner.
    Write { point: String, value: String },
}

#[derive(Debug, Subcommand)]
pub enum Iec104Command {
    /// Every IEC 104 master connection on every node: its forwarder, redundancy group, state,
    /// window and how far the master has acknowledged the event stream.
    Connections {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        watch: WatchArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a one-time join token for a new node.
    Create {
        /// How long the token stays valid (at most 24h).
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        ttl: Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// The trusted certificates and the pending join requests.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Let a pending node in.
    Allow { fingerprint: String },
    /// Stop trusting a certificate (a fingerprint or a name); a node is also removed from the
    /// membership, and its connections are cut.
    Revoke { target: String },
    /// Make and trust a key and certificate for an operator's CLI off the box.
    IssueOperator {
        name: String,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Trust a node in the operator identity given with --identity (after a restore, on
    /// new boxes); changes only the identity's nodes.json.
    PinNode {
        name: String,
        fingerprint: String,
        /// The node's admin address (IP:port).
        #[arg(long = "node-admin", value_name = "ADDR")]
        node_admin: String,
    },
}

/// Runs one command; errors are reported by the caller.
pub fn main(cli: Cli) -> anyhow::Result<()> {
    let level = match cli.command {
        // The demo's own device would fill its screen with every standby's probe.
        Command::Demo { .. } => "info,fepha::sim=warn",
        Command::Run | Command::Sim(_) => "info",
        _ => "warn",
    };
    init_tracing(level);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let timeout = cli.timeout;
    match cli.command {
        Command::Demo { dir } => return demo::run(dir).await,
        Command::Sim(SimCommand::Modbus {
            listen,
            profile,
            log,
        }) => return crate::sim::run_cli(listen, &profile, log.as_deref()).await,
        Command::Sim(SimCommand::Iec104 {
            listen,
            profile,
            log,
        }) => return crate::sim::iec104::run_cli(listen, &profile, log.as_deref()).await,
        Command::Run => {
            demo::stop_with_parent()?;
            return Ok(crate::node::run(NodeConfig::load(&cli.config)?).await?);
        }
        // These work on the node's own files while it is stopped, or on a file alone.
        Command::Snapshot(SnapshotCommand::Restore { file }) => {
            return snapshot::restore(&NodeConfig::load(&cli.config)?, &file);
        }
        Command::Snapshot(SnapshotCommand::Show { file }) => return snapshot::show(&file),
        Command::Recover {
            force_single_node: _,
            yes_the_others_are_down,
        } => {
            let config = NodeConfig::load(&cli.config)?;
            return recover::force_single_node(&config, yes_the_others_are_down).await;
        }
        Command::Cert(CertCommand::PinNode {
            name,
            fingerprint,
            node_admin,
        }) => {
            let Some(dir) = &cli.identity else {
                anyhow::bail!("cert pin-node changes an operator identity: give --identity DIR");
            };
            return certs::pin_node(dir, &name, &fingerprint, &node_admin);
        }
        // Offline: no node, no node.toml.
        Command::Config(ConfigCommand::Check { file }) => return config_cmd::check(&file),
        _ => {}
    }
    let target = match &cli.identity {
        Some(dir) => call::Target::operator(dir, cli.admin.as_deref())?,
        None => {
            let mut target = call::Target::node(&NodeConfig::load(&cli.config)?)?;
            if let Some(addr) = &cli.admin {
                target.addr.clone_from(addr);
            }
            target
        }
    };
    let t = &target;
    let result = run_command(cli.command, t, timeout).await;
    match result {
        Err(e) if transport_failure(&e) => Err(explain(t, e).await),
        other => other,
    }
}

/// A call that died below gRPC: the connection was dropped or reset.
fn transport_failure(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    [
        "transport error",
        "connection closed",
        "broken pipe",
        "operation was canceled",
    ]
    .iter()
    .any(|s| text.contains(s))
}

/// Replaces a bare "connection closed" with the reason, when the reason is that the node
/// refuses our certificate.
async fn explain(target: &call::Target, e: anyhow::Error) -> anyhow::Error {
    let credentials = &target.credentials;
    let refusal = crate::tls::refusal(
        &target.addr,
        credentials.identity.as_ref(),
        credentials.trust.clone(),
    )
    .await;
    match refusal {
        Some(reason) if !format!("{e:#}").contains("AccessDenied") => {
            anyhow::anyhow!("{reason} ({e:#})")
        }
        _ => e,
    }
}

async fn run_command(command: Command, t: &call::Target, timeout: Duration) -> anyhow::Result<()> {
    match command {
        Command::Init => members::init(t, timeout).await,
        Command::Join {
            token,
            peer,
            fingerprint,
        } => {
            let with = match (token, peer, fingerprint) {
                (Some(token), _, _) => members::JoinWith::Token(token),
                (None, Some(addr), Some(fingerprint)) => {
                    members::JoinWith::Peer { addr, fingerprint }
                }
                _ => anyhow::bail!("join needs --token, or --peer with --fingerprint"),
            };
            members::join(t, with, timeout).await
        }
        Command::Leave { node } => members::leave(t, node, timeout).await,
        Command::Status { watch, .. } if watch.watch => {
            let what = format!("fepha status ({})", t.label);
            watch::watch(&what, watch.interval, || async {
                Ok(status::render(&status::fetch(t).await?))
            })
            .await
        }
        Command::Status { json, .. } => status::status(t, json).await,
        Command::Members { json } => status::members(t, json).await,
        Command::Config(ConfigCommand::Apply { file, dry_run }) => {
            config_cmd::apply(t, &file, dry_run, timeout).await
        }
        Command::Config(ConfigCommand::Diff { file }) => config_cmd::diff(t, &file).await,
        Command::Config(ConfigCommand::Show { json }) => config_cmd::show(t, json).await,
        Command::Config(ConfigCommand::History { json }) => config_cmd::history(t, json).await,
        Command::Rtu(RtuCommand::List { watch, .. }) if watch.watch => {
            let what = format!("fepha rtu list ({})", t.label);
            let limit = watch::frame_limit(watch.interval);
            watch::watch(&what, watch.interval, || async move {
                Ok(rtu::render(&rtu::fetch(t, limit).await?))
            })
            .await
        }
        Command::Rtu(RtuCommand::List { json, .. }) => rtu::list(t, json, timeout).await,
        Command::Rtu(RtuCommand::Move { rtu, to, force }) => {
            rtu::move_to(t, &rtu, &to, force, timeout).await
        }
        Command::Point(PointCommand::List { rtu, json }) => point::list(t, rtu, json).await,
        Command::Point(PointCommand::Write { point, value }) => {
            point::write(t, &point, &value, timeout).await
        }
        Command::Iec104(Iec104Command::Connections { watch, .. }) if watch.watch => {
            let what = format!("fepha iec104 connections ({})", t.label);
            watch::watch(&what, watch.interval, || async {
                Ok(iec104::render(&iec104::fetch(t).await?))
            })
            .await
        }
        Command::Iec104(Iec104Command::Connections { json, .. }) => {
            iec104::connections(t, json).await
        }
        Command::Token(TokenCommand::Create { ttl }) => certs::token_create(t, ttl, timeout).await,
        Command::Cert(CertCommand::List { json }) => certs::list(t, json).await,
        Command::Cert(CertCommand::Allow { fingerprint }) => {
            certs::allow(t, &fingerprint, timeout).await
        }
        Command::Cert(CertCommand::Revoke { target }) => certs::revoke(t, &target, timeout).await,
        Command::Cert(CertCommand::IssueOperator { name, out }) => {
            certs::issue_operator(t, &name, &out, timeout).await
        }
        Command::Snapshot(SnapshotCommand::Save { file }) => snapshot::save(t, &file).await,
        Command::Audit { json } => snapshot::audit(t, json).await,
        Command::Demo { .. }
        | Command::Run
        | Command::Sim(_)
        | Command::Snapshot(_)
        | Command::Recover { .. }
        | Command::Cert(CertCommand::PinNode { .. })
        | Command::Config(ConfigCommand::Check { .. }) => unreachable!("handled above"),
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
