//! Wall-clock jumps on one node, with libfaketime (Debian's `faketime` package): every node
//! runs with it preloaded and its own offset file, read at every call (`FAKETIME_NO_CACHE`),
//! so writing the file moves that node's wall clock at once. Monotonic clocks are left alone
//! (`FAKETIME_DONT_FAKE_MONOTONIC`): leases run on them, and the point of the fault is that a
//! wall clock that jumps must not matter to them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use fepha_cluster_tests::Cluster;

const LIBRARIES: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
];

pub struct FakeClock {
    file: PathBuf,
}

fn library() -> Result<&'static str> {
    LIBRARIES
        .iter()
        .copied()
        .find(|p| Path::new(p).is_file())
        .context("libfaketime is not installed (apt-get install faketime); run without the clock fault or install it")
}

fn env(file: &Path) -> Result<Vec<(&'static str, String)>> {
    Ok(vec![
        ("LD_PRELOAD", library()?.to_owned()),
        (
            "FAKETIME_TIMESTAMP_FILE",
            file.to_string_lossy().into_owned(),
        ),
        ("FAKETIME_NO_CACHE", "1".to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ])
}

impl FakeClock {
    /// Gives node `i` its offset file (offset 0) and the environment for its next start.
    pub fn install(c: &Cluster, i: usize) -> Result<FakeClock> {
        let file = c.dir().join(format!("{}.faketime", c.name(i)));
        std::fs::write(&file, "+0\n")?;
        for (k, v) in env(&file)? {
            c.node(i).set_env(k, &v);
        }
        Ok(FakeClock { file })
    }

    /// Sets the node's wall clock `offset_s` seconds off the real one (0: back to true time).
    pub fn set(&self, offset_s: i64) -> Result<()> {
        std::fs::write(&self.file, format!("{offset_s:+}\n"))?;
        Ok(())
    }
}

/// Checks that libfaketime moves our binary's wall clock and only it: `fepha sim iec104`
/// started with the clock a day ahead must stamp its first log line a day ahead.
pub fn verify(bin: &Path, dir: &Path) -> Result<()> {
    let file = dir.join("verify.faketime");
    std::fs::write(&file, "+86400\n")?;
    let profile = dir.join("verify-sim.toml");
    std::fs::write(
        &profile,
        "common_address = 1\n[[point]]\nioa = 1\ntype = \"M_SP_NA_1\"\nvalue = false\n",
    )?;
    let stderr = dir.join("verify-sim.log");
    let mut child = Command::new(bin)
        .args(["sim", "iec104", "--listen", "127.0.0.1:0", "--profile"])
        .arg(&profile)
        .envs(env(&file)?)
        .env("FEPHA_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr)?)
        .spawn()?;
    let mut seen = None;
    for _ in 0..100 {
        let text = std::fs::read_to_string(&stderr).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            seen = Some(line.to_owned());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = seen.context("the sim under faketime wrote nothing")?;
    let stamped =
        parse_rfc3339_s(&line).with_context(|| format!("no timestamp at the start of {line:?}"))?;
    let now = crate::history::now_ms() / 1000;
    let ahead = i64::try_from(stamped).unwrap_or(0) - i64::try_from(now).unwrap_or(0);
    if (ahead - 86400).abs() > 60 {
        bail!("libfaketime did not move fepha's clock a day ahead: it is {ahead} s ahead ({line})");
    }
    Ok(())
}

/// Seconds since the Unix epoch of a line that starts `YYYY-MM-DDTHH:MM:SS` (UTC).
pub fn parse_rfc3339_s(line: &str) -> Option<u64> {
    let d = line.get(..19)?;
    let num = |r: std::ops::Range<usize>| d.get(r)?.parse::<u64>().ok();
    let (y, m, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, min, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant's algorithm), for years after 1970.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + h * 3600 + min * 60 + s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_a_log_timestamp() {
        assert_eq!(
            super::parse_rfc3339_s("2024-03-01T12:00:05.123Z  INFO x"),
            Some(1_709_294_405)
        );
        assert_eq!(super::parse_rfc3339_s("nonsense"), None);
    }
}
