//! Reaching the local node, and retrying writes through an election.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::admin::NO_LEADER;
use crate::admin::client::dial;
use crate::config::NodeConfig;
use crate::proto::admin::admin_client::AdminClient;

pub async fn local(config: &NodeConfig) -> anyhow::Result<AdminClient<Channel>> {
    dial(&config.admin_addr.to_string(), Duration::from_secs(2))
        .await
        .map_err(|e| anyhow!("{e} (is `fepha run` running for node {}?)", config.name))
}

/// Calls `f` until it succeeds, fails for a reason other than a missing leader, or
/// `deadline` has passed.
pub async fn retrying<T, F, Fut>(deadline: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let start = Instant::now();
    loop {
        // A write that a leader has accepted but cannot commit (it lost its quorum) gets no
        // answer at all, so each attempt is bounded by what is left of the deadline too.
        let left = deadline.saturating_sub(start.elapsed());
        let Ok(answer) = tokio::time::timeout(left, f()).await else {
            bail!(
                "{NO_LEADER} that a quorum follows: nothing was committed within {:.1}s \
                 (a write already accepted may still commit later)",
                deadline.as_secs_f64()
            );
        };
        match answer {
            Ok(v) => return Ok(v),
            Err(s) if s.code() == Code::Unavailable => {
                if start.elapsed() >= deadline {
                    bail!(
                        "{NO_LEADER} (waited {:.1}s; last answer: {})",
                        deadline.as_secs_f64(),
                        s.message()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => bail!("{}", s.message()),
        }
    }
}

/// A read answered by the local node alone.
pub fn status_error(s: Status) -> anyhow::Error {
    anyhow!("{}", s.message())
}
