//! RTU leases through the admin API, for the groups whose rounds move an RTU onto the leader
//! or off it before killing its owner.

use std::time::Duration;

use fepha::admin::client::Credentials;
use fepha::proto::admin::{RtuLease, RtuListRequest, RtuMoveRequest};
use fepha_cluster_tests::field::index_named;
use fepha_cluster_tests::{Cluster, admin_client};

pub struct Leases<'a> {
    c: &'a Cluster,
    creds: Credentials,
}

impl<'a> Leases<'a> {
    pub fn new(c: &'a Cluster) -> Leases<'a> {
        Leases {
            c,
            creds: c.credentials(),
        }
    }

    /// The leases, as node `i` (forwarding to the leader) lists them.
    pub fn list(&self, i: usize) -> Result<Vec<RtuLease>, String> {
        let addr = self.c.admin_addr(i);
        self.c.block_on(async {
            let mut client = admin_client(&self.creds, &addr).await?;
            let call = client.rtu_list(RtuListRequest { forwarded: false });
            match tokio::time::timeout(Duration::from_secs(3), call).await {
                Ok(Ok(reply)) => Ok(reply.into_inner().rtus),
                Ok(Err(s)) => Err(format!("rtu list: {s}")),
                Err(_) => Err("rtu list took over 3 s".into()),
            }
        })
    }

    /// `rtu`'s lease, once it has an owner.
    pub fn owned(&self, i: usize, rtu: &str) -> Result<RtuLease, String> {
        let lease = self
            .list(i)?
            .into_iter()
            .find(|l| l.rtu == rtu)
            .ok_or(format!("no RTU {rtu}"))?;
        if lease.owner.is_empty() {
            return Err(format!("RTU {rtu} has no owner: {lease:?}"));
        }
        Ok(lease)
    }

    /// `rtu move RTU TO` through node `i`.
    pub fn move_rtu(&self, i: usize, rtu: &str, to: &str) -> Result<(), String> {
        let addr = self.c.admin_addr(i);
        self.c.block_on(async {
            let mut client = admin_client(&self.creds, &addr).await?;
            let call = client.rtu_move(RtuMoveRequest {
                rtu: rtu.into(),
                to: to.into(),
                force: false,
                forwarded: false,
            });
            match tokio::time::timeout(Duration::from_secs(5), call).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(s)) => Err(format!("rtu move: {s}")),
                Err(_) => Err("rtu move took over 5 s".into()),
            }
        })
    }

    /// `rtu`'s owner, first moved onto `leader` if `on_leader`, or off it if not.
    pub fn placed(&self, rtu: &str, leader: usize, on_leader: bool) -> usize {
        let c = self.c;
        let lease = c.wait_until(&format!("RTU {rtu} has an owner"), || {
            self.owned(leader, rtu)
        });
        let owner = index_named(c, &lease.owner);
        if on_leader == (owner == leader) {
            return owner;
        }
        let to = if on_leader { leader } else { (leader + 1) % 3 };
        c.wait_until(&format!("RTU {rtu} moves to {}", c.name(to)), || {
            self.move_rtu(leader, rtu, c.name(to))?;
            let now = self.owned(leader, rtu)?;
            (now.owner == c.name(to))
                .then_some(())
                .ok_or(format!("owned by {}", now.owner))
        });
        to
    }
}
