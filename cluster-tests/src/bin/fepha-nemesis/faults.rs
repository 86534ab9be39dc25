//! The faults: how each one is done to a node and undone again.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::world::{DISK_NODE, LEAVER, SLOW_NODE, SPARE, World, run};

/// What `--faults` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Kill,
    Pause,
    Partition,
    Clock,
    Member,
    Disk,
    Netem,
    SlowDisk,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Kill,
        Kind::Pause,
        Kind::Partition,
        Kind::Clock,
        Kind::Member,
        Kind::Disk,
        Kind::Netem,
        Kind::SlowDisk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::Partition => "partition",
            Kind::Clock => "clock",
            Kind::Member => "member",
            Kind::Disk => "disk",
            Kind::Netem => "netem",
            Kind::SlowDisk => "slowdisk",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// One fault as it was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL; healed by a restart.
    Kill(usize),
    /// SIGSTOP; healed by SIGCONT.
    Pause(usize),
    /// The node's link to the bridge down: cut from peers, devices and master alike.
    Isolate(usize),
    /// Cut from the other nodes both ways (blackhole routes), still on the field network.
    CutPeers(usize),
    /// The node's packets to its peers dropped; theirs still reach it.
    OneWay(usize),
    /// The node's wall clock moved by this many seconds.
    Clock(usize, i64),
    /// The node's data directory (a small tmpfs) filled to the last byte.
    Disk(usize),
    /// Delay (ms) and loss (%) on all the node's traffic; where the kernel has no netem, a
    /// token bucket instead (a rate of 8 kbit/s per ms of delay asked, queueing at most
    /// that delay, dropping the rest).
    Netem(usize, u32, u32),
    /// Reads and writes of the node's process to its data directory's loop device throttled
    /// to this many bytes and operations per second each (blkio cgroup).
    SlowDisk(usize, u64, u64),
    /// A member left and the spare box joined with a token: healed at once.
    Member { left: usize, joined: usize },
}

/// A fault that cannot be done now, and is not a failure: the cluster refused it (a `leave`
/// that would stall it). The nemesis records it and draws again later.
#[derive(Debug)]
pub struct NotNow(pub String);

impl std::fmt::Display for NotNow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not now: {}", self.0)
    }
}

impl std::error::Error for NotNow {}

impl Fault {
    pub fn node(&self) -> usize {
        match *self {
            Fault::Kill(i)
            | Fault::Pause(i)
            | Fault::Isolate(i)
            | Fault::CutPeers(i)
            | Fault::OneWay(i)
            | Fault::Clock(i, _)
            | Fault::Disk(i)
            | Fault::Netem(i, _, _)
            | Fault::SlowDisk(i, _, _) => i,
            Fault::Member { left, .. } => left,
        }
    }

    pub fn describe(&self, w: &World) -> Value {
        let name = |i: usize| w.c.name(i).to_owned();
        match *self {
            Fault::Kill(i) => json!({"fault": "kill", "node": name(i)}),
            Fault::Pause(i) => json!({"fault": "pause", "node": name(i)}),
            Fault::Isolate(i) => json!({"fault": "partition", "how": "isolated", "node": name(i)}),
            Fault::CutPeers(i) => {
                json!({"fault": "partition", "how": "cut from peers, not from the field", "node": name(i)})
            }
            Fault::OneWay(i) => {
                json!({"fault": "partition", "how": "one way: its packets to peers dropped", "node": name(i)})
            }
            Fault::Clock(i, s) => json!({"fault": "clock", "node": name(i), "offset_s": s}),
            Fault::Disk(i) => json!({"fault": "disk", "node": name(i)}),
            Fault::Netem(i, d, l) => {
                json!({"fault": "netem", "node": name(i), "delay_ms": d, "loss_pct": l})
            }
            Fault::SlowDisk(i, b, o) => {
                json!({"fault": "slowdisk", "node": name(i), "bytes_per_s": b, "iops": o})
            }
            Fault::Member { left, joined } => {
                json!({"fault": "member", "left": name(left), "joined": name(joined)})
            }
        }
    }

    pub fn apply(&self, w: &World) -> Result<()> {
        match *self {
            Fault::Kill(i) => w.c.kill(i),
            Fault::Pause(i) => {
                if !w.c.is_running(i) {
                    bail!("{} is not running", w.c.name(i));
                }
                w.c.stop(i);
            }
            Fault::Isolate(i) => w.c.cut(i),
            Fault::CutPeers(i) => routes(w, i, "add", true)?,
            Fault::OneWay(i) => routes(w, i, "add", false)?,
            Fault::Clock(i, s) => clock(w, i)?.set(s)?,
            Fault::Disk(i) => fill(w, i)?,
            Fault::Netem(i, d, l) => slow(w, i, d, l)?,
            Fault::SlowDisk(i, b, o) => {
                let disk = slow_disk(w, i)?;
                // Enrolled at every start already; again here so that a start the
                // nemesis did not see cannot leave the node out of the throttle.
                w.enrol(i)?;
                disk.limit(b, o)?;
            }
            Fault::Member { left, joined } => member_change(w, left, joined)?,
        }
        Ok(())
    }

    pub fn heal(&self, w: &World) -> Result<()> {
        match *self {
            Fault::Kill(i) => restart(w, i)?,
            // One that died while stopped is the watch's to note and restart.
            Fault::Pause(i) => {
                if w.c.is_running(i) {
                    w.c.cont(i);
                }
            }
            Fault::Isolate(i) => w.c.heal(i),
            Fault::CutPeers(i) => routes(w, i, "del", true)?,
            Fault::OneWay(i) => routes(w, i, "del", false)?,
            Fault::Clock(i, _) => clock(w, i)?.set(0)?,
            Fault::Disk(i) => std::fs::remove_file(ballast(w, i))?,
            Fault::Netem(i, _, _) => run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &w.ns(i),
                    "tc",
                    "qdisc",
                    "del",
                    "dev",
                    "eth0",
                    "root",
                ],
            )?,
            Fault::SlowDisk(i, _, _) => slow_disk(w, i)?.limit(0, 0)?,
            Fault::Member { .. } => {}
        }
        Ok(())
    }
}

fn slow_disk(w: &World, i: usize) -> Result<&crate::slowdisk::SlowDisk> {
    if i != SLOW_NODE {
        bail!("only {} has a slow disk", w.c.name(SLOW_NODE));
    }
    w.slow
        .as_ref()
        .ok_or_else(|| anyhow!("the campaign runs without the slow disk"))
}

fn clock(w: &World, i: usize) -> Result<&crate::clock::FakeClock> {
    w.clocks
        .get(i)
        .ok_or_else(|| anyhow!("the nodes run without libfaketime"))
}

/// Blackhole routes from node `i` to every other node, and back if `both`.
fn routes(w: &World, i: usize, op: &str, both: bool) -> Result<()> {
    let add = op == "add";
    for j in (0..w.c.len()).filter(|&j| j != i) {
        w.blackhole(i, j, add)?;
        if both {
            w.blackhole(j, i, add)?;
        }
    }
    Ok(())
}

fn slow(w: &World, i: usize, delay_ms: u32, loss_pct: u32) -> Result<()> {
    let ns = w.ns(i);
    let tc = |args: &[&str]| {
        let mut all = vec![
            "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0", "root",
        ];
        all.extend_from_slice(args);
        run("ip", &all)
    };
    let (delay, loss) = (format!("{delay_ms}ms"), format!("{loss_pct}%"));
    match tc(&["netem", "delay", &delay, "loss", &loss]) {
        Err(e) if format!("{e}").contains("qdisc kind is unknown") => {
            w.netem_missing
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let rate = format!("{}kbit", 8 * delay_ms);
            tc(&["tbf", "rate", &rate, "burst", "4kb", "latency", &delay])
        }
        other => other,
    }
}

fn ballast(w: &World, i: usize) -> std::path::PathBuf {
    w.c.node(i).data_dir.join("nemesis-ballast")
}

/// Writes a ballast file until the tmpfs has no byte left.
fn fill(w: &World, i: usize) -> Result<()> {
    if i != DISK_NODE {
        bail!("only {} has a small data directory", w.c.name(DISK_NODE));
    }
    let mut f = std::fs::File::create(ballast(w, i))?;
    let chunk = vec![0u8; 1 << 20];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => return Err(e.into()),
        }
    }
    // The last partial chunk: byte by byte is too slow, halve instead.
    let mut size = chunk.len() / 2;
    while size > 0 {
        if f.write_all(&chunk[..size]).is_err() {
            size /= 2;
        }
    }
    Ok(())
}

/// Starts the node again and waits (up to 30 s) for it to answer.
pub fn restart(w: &World, i: usize) -> Result<()> {
    if !w.c.is_running(i) {
        w.c.spawn(&[i]);
        // At once, so that little of the start passes unthrottled; again once it answers.
        w.enrol(i)?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if !w.c.is_running(i) {
            bail!(
                "{} exited while starting: {}",
                w.c.name(i),
                w.c.node(i).describe_process()
            );
        }
        if w.c.status(i).is_ok() {
            w.enrol(i)?;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} does not answer status 30 s after start", w.c.name(i));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The member that leaves and the box that joins, now: of the two boxes that take turns
/// (the third member and the spare at first), the one that is a member leaves and the other
/// joins. None while the membership has both or neither (a change half done).
pub fn member_pair(members: &[usize]) -> Option<(usize, usize)> {
    match (members.contains(&LEAVER), members.contains(&SPARE)) {
        (true, false) => Some((LEAVER, SPARE)),
        (false, true) => Some((SPARE, LEAVER)),
        _ => None,
    }
}

/// Whether `leave` was refused because the removal would stall the cluster.
fn refused_as_stalling(stderr: &str) -> bool {
    stderr.contains("now would stall the cluster")
}

/// `leave --node LEFT` through another member, then the box that left is killed, its
/// certificate revoked and its data wiped (it is the next spare), and the spare box joins
/// with a token.
fn member_change(w: &World, left: usize, joined: usize) -> Result<()> {
    let members = w.members();
    if member_pair(&members) != Some((left, joined)) {
        bail!(
            "{} cannot leave for {} now (members {:?})",
            w.c.name(left),
            w.c.name(joined),
            members
        );
    }
    let via = *members
        .iter()
        .find(|&&i| i != left)
        .ok_or_else(|| anyhow!("no other member"))?;
    let out = w.c.cli(via, &["leave", "--node", w.c.name(left)]);
    // The node checks what the nemesis cannot see at once (a voter that stopped answering
    // since the last look): a refusal is "not now", nothing was changed.
    if !out.success() && refused_as_stalling(&out.stderr) {
        return Err(NotNow(out.stderr.trim().to_owned()).into());
    }
    // A leave that timed out may still commit: go on only once the members say it did.
    if !out.success() && !left_within(w, via, left, Duration::from_secs(30)) {
        bail!("leave --node {}: {}", w.c.name(left), out.stderr.trim());
    }
    // From here on it is no member: whatever it does is no longer judged as a member's.
    w.set_members(members.iter().copied().filter(|&i| i != left).collect());
    w.c.kill(left);
    // Its certificate is still trusted under its name, and a new box of that name (this one,
    // wiped, at the next change) could not join: revoked, as an operator retires a box.
    let out = w.c.cli(via, &["cert", "revoke", w.c.name(left)]);
    if !out.success() {
        bail!("cert revoke {}: {}", w.c.name(left), out.stderr.trim());
    }
    // Wiped like a new box: no identity, no log, so it can join again with a fresh token.
    let data = &w.c.node(left).data_dir;
    std::fs::remove_dir_all(data)
        .and_then(|()| std::fs::create_dir_all(data))
        .with_context(|| format!("wiping {}", data.display()))?;
    let out = w.c.cli(via, &["token", "create"]);
    if !out.success() {
        bail!("token create: {}", out.stderr.trim());
    }
    let token = out.stdout.trim().to_owned();
    restart(w, joined)?;
    let out =
        w.c.cli(joined, &["join", "--token", &token, "--timeout", "30s"]);
    if !out.success() {
        bail!("join of {}: {}", w.c.name(joined), out.stderr.trim());
    }
    let mut now = w.members();
    now.push(joined);
    w.set_members(now);
    // The joined box is running as a member; the one that left stays down until it joins.
    Ok(())
}

/// Whether `via` sees `left` gone from the membership within `limit`.
fn left_within(w: &World, via: usize, left: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(s) = w.c.status(via)
            && s.leader.is_some()
            && !s.members.iter().any(|m| m.name == w.c.name(left))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_boxes_take_turns() {
        assert_eq!(member_pair(&[0, 1, LEAVER]), Some((LEAVER, SPARE)));
        assert_eq!(member_pair(&[0, 1, SPARE]), Some((SPARE, LEAVER)));
        assert_eq!(member_pair(&[SPARE, 0, 1]), Some((SPARE, LEAVER)));
        // Half way through a change: neither, or both.
        assert_eq!(member_pair(&[0, 1]), None);
        assert_eq!(member_pair(&[0, 1, LEAVER, SPARE]), None);
    }

    #[test]
    fn a_stalling_refusal_is_told_apart() {
        assert!(refused_as_stalling(
            "Error: removing n2 now would stall the cluster: without a majority of voters \
             that answer (down: n1), before and after the change"
        ));
        assert!(!refused_as_stalling("Error: no member is called n2"));
        assert!(!refused_as_stalling("Error: deadline exceeded"));
    }

    #[test]
    fn every_kind_parses_by_its_name() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
        assert_eq!(Kind::parse("slowdisk"), Some(Kind::SlowDisk));
        assert_eq!(Kind::parse("slow"), None);
    }
}
