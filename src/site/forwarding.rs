//! What a forwarder's entry says beyond its fields: its link parameters and its redundancy
//! groups. The site checks them when it validates; the forwarder uses the same answers.

use std::net::IpAddr;
use std::time::Duration;

use super::{Forwarder, Group};
use crate::iec104::LinkParams;

/// The name of the group of a forwarder that declares none.
pub(crate) const DEFAULT_GROUP: &str = "default";

impl Forwarder {
    /// The link parameters this forwarder's configuration gives, or why they are not numbers.
    pub fn link_params(&self) -> Result<LinkParams, String> {
        let secs = |name: &str, s: f64| {
            if s.is_finite() && s > 0.0 && s < 86_400.0 {
                Ok(Duration::from_secs_f64(s))
            } else {
                Err(format!("{name} = {s} is not a time between 0 and one day"))
            }
        };
        Ok(LinkParams {
            k: self.k,
            w: self.w,
            t1: secs("t1_s", self.t1_s)?,
            t2: secs("t2_s", self.t2_s)?,
            t3: secs("t3_s", self.t3_s)?,
        })
    }

    /// The forwarder's redundancy groups by name.
    pub fn group_names(&self) -> Vec<String> {
        if self.groups.is_empty() {
            return vec![DEFAULT_GROUP.to_string()];
        }
        self.groups
            .iter()
            .map(|g| g.name.get_ref().clone())
            .collect()
    }

    /// The group a master at `ip` belongs to; None if the forwarder's groups leave it out.
    pub fn group_of(&self, ip: IpAddr) -> Option<String> {
        if self.groups.is_empty() {
            return Some(DEFAULT_GROUP.to_string());
        }
        let listed = |g: &Group| {
            g.masters
                .iter()
                .any(|m| m.get_ref().parse::<IpAddr>().is_ok_and(|a| a == ip))
        };
        self.groups
            .iter()
            .find(|g| listed(g))
            .or_else(|| self.groups.iter().find(|g| g.masters.is_empty()))
            .map(|g| g.name.get_ref().clone())
    }
}
