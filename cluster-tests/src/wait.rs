//! Polling a condition until a deadline.

use std::time::{Duration, Instant};

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `probe` until it gives `Ok`, or panics after `timeout` with `what`, the probe's last
/// reason for `Err`, and `report()` (the state of whatever is being waited on).
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
    report: impl FnOnce() -> String,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(why) if start.elapsed() >= timeout => {
                panic!(
                    "timed out after {:.1}s waiting until {what}\nlast reason: {why}\n{}",
                    timeout.as_secs_f64(),
                    report()
                )
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// `500ms`, `3s`, `2m`: the CLI's `--timeout` syntax.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        _ => None,
    }
}
