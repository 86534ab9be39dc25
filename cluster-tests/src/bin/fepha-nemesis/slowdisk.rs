//! The slow disk: one node's data directory is an ext4 on a file-backed loop device, and the
//! node's process is in a blkio cgroup of the campaign's own, so the fault can throttle that
//! process's reads and writes to that device (cgroup v1 `blkio.throttle.*`), fsync included.
//!
//! Everything made here is undone when the value drops, also when the set-up fails half way:
//! unmounted, the loop device detached, the cgroup emptied and removed.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::world::{output, run};

/// The size of the sparse image; only what the node writes takes room.
const IMAGE_BYTES: u64 = 512 << 20;
const BLKIO: &str = "/sys/fs/cgroup/blkio";

pub struct SlowDisk {
    mount_at: PathBuf,
    /// `/dev/loopN`, once attached.
    loop_dev: Option<String>,
    /// `major:minor` of the loop device, what the throttle files name.
    dev: String,
    mounted: bool,
    /// The cgroup directory, once made.
    cgroup: Option<PathBuf>,
}

impl SlowDisk {
    /// Makes `image` (sparse), attaches it to a free loop device, makes an ext4 on it,
    /// mounts it at `mount_at` and makes the blkio cgroup `cgroup_name`.
    pub fn create(image: &Path, mount_at: &Path, cgroup_name: &str) -> Result<SlowDisk> {
        let blkio = Path::new(BLKIO);
        if !blkio.join("blkio.throttle.write_bps_device").exists() {
            bail!("no cgroup v1 blkio throttle at {BLKIO}: the slow-disk fault needs it");
        }
        let mut s = SlowDisk {
            mount_at: mount_at.to_owned(),
            loop_dev: None,
            dev: String::new(),
            mounted: false,
            cgroup: None,
        };
        std::fs::File::create(image)
            .and_then(|f| f.set_len(IMAGE_BYTES))
            .with_context(|| format!("the slow disk's image {}", image.display()))?;
        let image = image.to_string_lossy();
        let dev = output("losetup", &["-f", "--show", &image])?;
        s.loop_dev = Some(dev.clone());
        let name = dev
            .strip_prefix("/dev/")
            .ok_or_else(|| anyhow!("losetup answered {dev:?}, not a /dev path"))?;
        let numbers = std::fs::read_to_string(format!("/sys/block/{name}/dev"))
            .with_context(|| format!("the device numbers of {dev}"))?;
        s.dev = parse_dev(&numbers).ok_or_else(|| anyhow!("{dev}: device numbers {numbers:?}"))?;
        run("mkfs.ext4", &["-q", "-F", &dev])?;
        std::fs::create_dir_all(mount_at)?;
        run("mount", &[&dev, &mount_at.to_string_lossy()])?;
        s.mounted = true;
        let cgroup = blkio.join(cgroup_name);
        std::fs::create_dir(&cgroup)
            .with_context(|| format!("cannot make the cgroup {}", cgroup.display()))?;
        s.cgroup = Some(cgroup);
        Ok(s)
    }

    /// Moves process `pid` (all its threads) into the cgroup; what it does from now on is
    /// throttled while a limit is set. Done after every (re)start: a new process starts in
    /// the campaign's own cgroup.
    pub fn enrol(&self, pid: u32) -> Result<()> {
        let cgroup = self.cgroup()?;
        std::fs::write(cgroup.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("pid {pid} into {}", cgroup.display()))
    }

    /// Throttles reads and writes to the loop device to `bytes_per_s` and `iops` each; 0 and
    /// 0 remove the limits.
    pub fn limit(&self, bytes_per_s: u64, iops: u64) -> Result<()> {
        let cgroup = self.cgroup()?;
        for (file, v) in [
            ("blkio.throttle.write_bps_device", bytes_per_s),
            ("blkio.throttle.write_iops_device", iops),
            ("blkio.throttle.read_bps_device", bytes_per_s),
            ("blkio.throttle.read_iops_device", iops),
        ] {
            std::fs::write(cgroup.join(file), format!("{} {v}", self.dev))
                .with_context(|| format!("{file} of {}", cgroup.display()))?;
        }
        Ok(())
    }

    fn cgroup(&self) -> Result<&Path> {
        self.cgroup
            .as_deref()
            .ok_or_else(|| anyhow!("the slow disk has no cgroup"))
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            // A process still in it (the set-up failed with the node running) goes back to
            // the root cgroup, or the directory cannot be removed.
            let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(Path::new(BLKIO).join("cgroup.procs"), pid);
            }
            if let Err(e) = std::fs::remove_dir(&cgroup) {
                eprintln!("cannot remove the cgroup {}: {e}", cgroup.display());
            }
        }
        if self.mounted {
            let at = self.mount_at.to_string_lossy();
            // Lazy if it is still busy: a node that still has a file open there must not
            // keep it mounted.
            if run("umount", &[&at]).is_err()
                && let Err(e) = run("umount", &["-l", &at])
            {
                eprintln!("cannot unmount the slow disk: {e}");
            }
        }
        if let Some(dev) = self.loop_dev.take() {
            // On a device still in use (a lazy unmount) the kernel detaches it once it is
            // released.
            if let Err(e) = run("losetup", &["-d", &dev]) {
                eprintln!("cannot detach the slow disk's loop device: {e}");
            }
        }
    }
}

/// `major:minor` from a `/sys/block/*/dev` file.
fn parse_dev(text: &str) -> Option<String> {
    let (major, minor) = text.trim().split_once(':')?;
    let major: u32 = major.parse().ok()?;
    let minor: u32 = minor.parse().ok()?;
    Some(format!("{major}:{minor}"))
}

/// The fault's limits from one draw of 0..1000: 16 to 128 KiB/s and 5 to 40 operations per
/// second. Measured here, a 4 KiB write with O_DSYNC takes about 4.5 ms on the loop device
/// unthrottled, 62 ms at 64 KiB/s and 20 iops, 250 ms at 16 KiB/s and 5 iops.
pub fn limits(amount: u32) -> (u64, u64) {
    let kib = 16 + u64::from(amount % 113);
    let iops = 5 + u64::from(amount / 7 % 36);
    (kib * 1024, iops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers() {
        assert_eq!(parse_dev("7:0\n").as_deref(), Some("7:0"));
        assert_eq!(parse_dev("259:12").as_deref(), Some("259:12"));
        assert_eq!(parse_dev("7"), None);
        assert_eq!(parse_dev("7:x"), None);
        assert_eq!(parse_dev(""), None);
    }

    #[test]
    fn limits_stay_in_range_and_are_never_zero() {
        for amount in 0..1000 {
            let (bps, iops) = limits(amount);
            assert!((16 * 1024..=128 * 1024).contains(&bps), "{amount}: {bps}");
            assert!((5..=40).contains(&iops), "{amount}: {iops}");
        }
        assert_eq!(limits(0), (16 * 1024, 5));
        assert_eq!(limits(112).0, 128 * 1024);
    }
}
