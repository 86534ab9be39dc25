//! `fepha point list` and `fepha point write`.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use tonic::Code;

use super::call::{Target, status_error};
use super::output::outln;
use crate::admin::NO_LEADER;
use crate::proto::admin::*;

pub(super) async fn list(
    target: &Target,
    rtu: Option<String>,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut client = target.connect().await?;
    let reply = client
        .point_list(PointListRequest {
            rtu: rtu.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if as_json {
        let points: Vec<_> = reply
            .points
            .iter()
            .map(|p| {
                json!({"id": p.id, "rtu": p.rtu, "kind": p.kind,
                       "value": p.has_value.then_some(&p.value),
                       "number": p.has_value.then_some(p.number),
                       "invalid": p.invalid, "not_topical": p.not_topical,
                       "time_ms": p.time_ms, "source": p.source, "epoch": p.epoch})
            })
            .collect();
        outln!("{:#}", json!(points));
        return Ok(());
    }
    outln!(
        "{:<24} {:<12} {:<14} {:<8} {:<24} SOURCE",
        "POINT",
        "RTU",
        "VALUE",
        "QUALITY",
        "TIME (UTC)"
    );
    for p in &reply.points {
        let value = if p.has_value { p.value.as_str() } else { "-" };
        let quality = match (p.has_value, p.invalid, p.not_topical) {
            (false, _, _) => "-",
            (_, true, true) => "IV,NT",
            (_, true, false) => "IV",
            (_, false, true) => "NT",
            _ => "good",
        };
        let time = if p.has_value {
            format_time(p.time_ms)
        } else {
            "-".into()
        };
        outln!(
            "{:<24} {:<12} {:<14} {:<8} {:<24} {}",
            p.id,
            p.rtu,
            value,
            quality,
            time,
            p.source
        );
    }
    Ok(())
}

/// `YYYY-MM-DD hh:mm:ss.mmm` in UTC, without a date library.
pub(super) fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// Sends the command once: it is retried only while no leader took it, since a command
/// that reached the log must not be proposed twice.
pub(super) async fn write(
    target: &Target,
    point: &str,
    value: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = target.connect().await?;
    let start = Instant::now();
    let reply = loop {
        let mut c = client.clone();
        let request = PointWriteRequest {
            point: point.to_owned(),
            value: value.to_owned(),
            timeout_ms: timeout.as_millis() as u64,
            forwarded: false,
        };
        match c.point_write(request).await {
            Ok(r) => break r.into_inner(),
            Err(s)
                if s.code() == Code::Unavailable
                    && (s.message() == NO_LEADER || s.message() == "leadership is moving")
                    && start.elapsed() < timeout =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => return Err(status_error(s)),
        }
    };
    if !reply.ok {
        bail!("command {} on {point} failed: {}", reply.id, reply.outcome);
    }
    outln!("command {} on {point}: {}", reply.id, reply.outcome);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_times() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00:00.000");
        assert_eq!(
            super::format_time(1_795_000_000_123),
            "2026-11-18 11:06:40.123"
        );
    }
}
