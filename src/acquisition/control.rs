//! `point write`: an operator's command to a point, checked against the site before it goes
//! to the log (so a value the device cannot take is refused there), then run by the
//! cluster to its outcome through the RTU's owner.

use std::time::Duration;

use super::command::{CommandError, encode, parse_value};
use crate::cluster::{Cluster, ClusterError, CommandOutcome, NewCommand};
use crate::site::PointKind;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    #[error("no site configuration applied")]
    NoSite,
    #[error("no point {0:?}")]
    NoSuchPoint(String),
    #[error("{0} is a {1:?} point, not a command")]
    NotACommand(String, PointKind),
    #[error(transparent)]
    BadValue(#[from] CommandError),
    #[error(transparent)]
    BadValue104(#[from] super::iec104::points::CommandError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Writes `text` (as an operator types it) to the command point `point`.
pub(crate) async fn write_point(
    cluster: &Cluster,
    point: &str,
    text: &str,
    origin: String,
    timeout: Duration,
) -> Result<CommandOutcome, ControlError> {
    let site = cluster.site().ok_or(ControlError::NoSite)?;
    let p = site
        .points
        .iter()
        .find(|p| p.id.get_ref() == point)
        .ok_or_else(|| ControlError::NoSuchPoint(point.to_owned()))?;
    let kind = *p.kind.get_ref();
    if !kind.is_command() {
        return Err(ControlError::NotACommand(point.to_owned(), kind));
    }
    let value = parse_value(p, text)?;
    let iec104 = site
        .rtus
        .iter()
        .find(|r| r.id.get_ref() == p.rtu.get_ref())
        .and_then(|r| r.iec104.as_ref());
    match iec104 {
        Some(t) => {
            let map = super::iec104::points::PointMap::new(
                *t.common_address.get_ref(),
                std::slice::from_ref(p),
            );
            if let Some(c) = map.command(point) {
                c.asdu(&value, false, t.originator)?;
            }
        }
        None => {
            encode(p, &value)?;
        }
    }
    let command = NewCommand {
        point: point.to_owned(),
        rtu: p.rtu.get_ref().clone(),
        value,
        origin,
        select: false,
        device_confirms: iec104.is_some(),
    };
    Ok(cluster.run_command(command, timeout, || {}).await?)
}
