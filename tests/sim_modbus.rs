//! `fepha sim modbus` as a real process, driven by tokio-modbus's TCP client.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_modbus::client::{Context, Reader, Writer, tcp};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

const FEPHA: &str = env!("CARGO_BIN_EXE_fepha");
const DEADLINE: Duration = Duration::from_secs(10);
/// How often a poll under a deadline looks again.
const POLL: Duration = Duration::from_millis(20);

const PROFILE: &str = r#"
unit_ids = [1]

[coils]
count = 8
values = [true, false, true]

[discrete_inputs]
count = 4
values = [true, false]

[holding_registers]
count = 10
values = [100, 200, 300]

[input_registers]
count = 4
values = [11, 22]

[[schedule]]
kind = "toggle"
table = "discrete_inputs"
address = 0
every_ms = 100

[[schedule]]
kind = "toggle"
table = "discrete_inputs"
address = 1
every_ms = 100

[[schedule]]
kind = "ramp"
table = "input_registers"
address = 3
min = 0
max = 60000
step = 1
every_ms = 20
"#;

/// A running `fepha sim modbus`, killed when dropped.
struct Sim {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sim {
    async fn start(profile: &str) -> Sim {
        let dir = tempfile::tempdir().expect("temp dir");
        let profile_path = dir.path().join("profile.toml");
        std::fs::write(&profile_path, profile).expect("write the profile");
        let log = dir.path().join("requests.jsonl");
        let stderr = dir.path().join("stderr");
        let addr = free_addr();
        let child = Command::new(FEPHA)
            .args(["sim", "modbus", "--listen", &addr.to_string(), "--profile"])
            .arg(&profile_path)
            .arg("--log")
            .arg(&log)
            .env("FEPHA_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start fepha sim modbus");
        let mut sim = Sim {
            child,
            addr,
            log,
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = sim.child.try_wait().expect("try_wait") {
                panic!("the sim exited with {status}: {}", sim.stderr_text());
            }
            if TcpStream::connect(addr).await.is_ok() {
                return sim;
            }
            assert!(
                Instant::now() < deadline,
                "the sim does not listen on {addr}: {}",
                sim.stderr_text()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// A client on unit 1, and the address the device sees it as.
    async fn client(&self) -> (Context, SocketAddr) {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let local = stream.local_addr().expect("local addr");
        (tcp::attach_slave(stream, Slave(1)), local)
    }

    fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .expect("read the request log")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    fn stop(&mut self) -> ExitStatus {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM");
        wait_exit(&mut self.child)
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the process does not exit");
        }
        std::thread::sleep(POLL);
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
    )
    .expect("ms fit u64")
}

/// Unwraps a tokio-modbus result that must be a normal answer.
macro_rules! ok {
    ($e:expr) => {
        $e.await
            .expect("transport")
            .expect("a normal answer, not an exception")
    };
}

/// Unwraps a tokio-modbus result that must be an exception.
macro_rules! exception {
    ($e:expr) => {
        $e.await.expect("transport").expect_err("an exception")
    };
}

#[tokio::test]
async fn serves_reads_writes_schedules_and_logs() {
    let mut sim = Sim::start(PROFILE).await;
    let started_ms = now_ms();
    let (mut c, me) = sim.client().await;
    let mut requests = 0;

    // The initial values.
    assert_eq!(
        ok!(c.read_coils(0, 8)),
        [true, false, true, false, false, false, false, false]
    );
    assert_eq!(ok!(c.read_holding_registers(0, 4)), [100, 200, 300, 0]);
    assert_eq!(ok!(c.read_input_registers(0, 2)), [11, 22]);
    let di = ok!(c.read_discrete_inputs(0, 2));
    assert_ne!(di[0], di[1], "the double indication is never 00 or 11");
    requests += 4;

    // Writes read back.
    ok!(c.write_single_coil(1, true));
    assert_eq!(ok!(c.read_coils(0, 3)), [true, true, true]);
    ok!(c.write_multiple_registers(5, &[7, 8, 9]));
    assert_eq!(ok!(c.read_holding_registers(5, 3)), [7, 8, 9]);
    ok!(c.write_single_register(9, 65535));
    ok!(c.write_multiple_coils(6, &[true, true]));
    assert_eq!(ok!(c.read_holding_registers(9, 1)), [65535]);
    assert_eq!(ok!(c.read_coils(6, 2)), [true, true]);
    requests += 8;

    // Out of range: exception 2; a quantity Modbus does not allow: exception 3; another unit
    // id: exception 0x0B.
    let out_of_range = requests;
    assert_eq!(
        exception!(c.read_holding_registers(8, 3)),
        ExceptionCode::IllegalDataAddress
    );
    assert_eq!(
        exception!(c.read_coils(8, 1)),
        ExceptionCode::IllegalDataAddress
    );
    assert_eq!(
        exception!(c.write_single_register(10, 1)),
        ExceptionCode::IllegalDataAddress
    );
    assert_eq!(
        exception!(c.read_input_registers(0, 200)),
        ExceptionCode::IllegalDataValue
    );
    c.set_slave(Slave(9));
    assert_eq!(
        exception!(c.read_holding_registers(0, 1)),
        ExceptionCode::GatewayTargetDevice
    );
    c.set_slave(Slave(1));
    requests += 5;

    // The schedules: the ramp climbs, the double indication flips with both bits at once.
    let ramp_start = ok!(c.read_input_registers(3, 1))[0];
    let di_start = ok!(c.read_discrete_inputs(0, 2));
    requests += 2;
    let deadline = Instant::now() + DEADLINE;
    let (mut ramped, mut toggled) = (false, false);
    while !(ramped && toggled) {
        assert!(
            Instant::now() < deadline,
            "ramped: {ramped}, toggled: {toggled}"
        );
        tokio::time::sleep(POLL).await;
        ramped |= ok!(c.read_input_registers(3, 1))[0] > ramp_start;
        let di = ok!(c.read_discrete_inputs(0, 2));
        requests += 2;
        assert_ne!(di[0], di[1], "the double indication is never 00 or 11");
        toggled |= di != di_start;
    }

    // A second client, seen under its own address.
    let (mut other, other_addr) = sim.client().await;
    assert_eq!(ok!(other.read_input_registers(0, 1)), [11]);
    let done_ms = now_ms();

    // One log line per request, written before the answer, with the client's address.
    let lines = sim.log_lines();
    assert_eq!(lines.len(), requests + 1, "{lines:#?}");
    for (i, l) in lines.iter().enumerate() {
        let client = if i < requests { me } else { other_addr };
        assert_eq!(l["client"], client.to_string(), "line {i}: {l}");
        let t = l["time_ms"].as_u64().expect("time_ms");
        assert!((started_ms..=done_ms).contains(&t), "line {i}: {l}");
    }
    assert_eq!(
        lines[0],
        serde_json::json!({"time_ms": lines[0]["time_ms"], "client": me.to_string(), "unit": 1,
            "fc": 1, "function": "read_coils", "address": 0, "count": 8, "exception": null})
    );
    let bad = &lines[out_of_range];
    assert_eq!(
        (
            &bad["function"],
            &bad["address"],
            &bad["count"],
            &bad["exception"]
        ),
        (
            &serde_json::json!("read_holding_registers"),
            &serde_json::json!(8),
            &serde_json::json!(3),
            &serde_json::json!(2)
        )
    );
    assert_eq!(lines[out_of_range + 4]["unit"], 9);
    assert_eq!(lines[out_of_range + 4]["exception"], 0x0B);

    // SIGTERM stops it cleanly.
    let status = sim.stop();
    assert!(status.success(), "{status}: {}", sim.stderr_text());
    assert!(
        sim.stderr_text().contains("SIGTERM received"),
        "{}",
        sim.stderr_text()
    );
}

/// Frames that tokio-modbus's decoder panics on, or cannot decode, end their connection and
/// nothing else; a function the device lacks gets exception 1.
#[tokio::test]
async fn malformed_frames_end_only_their_connection() {
    let sim = Sim::start(PROFILE).await;
    let frame = |pdu: &[u8]| {
        let mut f = vec![0, 7, 0, 0];
        f.extend_from_slice(&u16::try_from(pdu.len() + 1).expect("len").to_be_bytes());
        f.push(1);
        f.extend_from_slice(pdu);
        f
    };
    let bad = [
        // Write multiple registers, quantity 0x8000, byte count 0.
        frame(&[0x10, 0, 0, 0x80, 0, 0]),
        // Write multiple coils, 16 coils in one byte.
        frame(&[0x0F, 0, 0, 0, 16, 1, 0xFF]),
        // Read/write multiple registers, write quantity 0x8000.
        frame(&[0x17, 0, 0, 0, 1, 0, 0, 0x80, 0, 0]),
        // Not Modbus: protocol id 1.
        vec![0, 1, 0, 1, 0, 6, 1, 3, 0, 0, 0, 1],
        // A length field past what Modbus allows.
        vec![0, 1, 0, 0, 0xFF, 0xFF, 1, 3],
    ];
    for wire in &bad {
        let mut s = TcpStream::connect(sim.addr).await.expect("connect");
        s.write_all(wire).await.expect("send");
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .expect("the device closes the connection");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "{wire:?} got an answer: {read:?}"
        );
    }

    // Read Exception Status (7): a serial-line function this device lacks.
    let mut s = TcpStream::connect(sim.addr).await.expect("connect");
    s.write_all(&frame(&[0x07])).await.expect("send");
    let mut answer = [0u8; 9];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut answer))
        .await
        .expect("an answer in time")
        .expect("an answer");
    assert_eq!(answer, [0, 7, 0, 0, 0, 3, 1, 0x87, 0x01]);

    let (mut c, _) = sim.client().await;
    assert_eq!(ok!(c.read_holding_registers(0, 1)), [100]);
    let stderr = sim.stderr_text();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn broken_profiles_are_refused_naming_the_key() {
    let cases = [
        ("unit_ids = [1]\n[coils]\ncont = 4\n", "cont"),
        ("unit_ids = [1]\n[coils]\ncount = 70000\n", "coils.count"),
        (
            "unit_ids = [1]\n[holding_registers]\ncount = 2\nvalues = [1, 2, 3]\n",
            "holding_registers.values",
        ),
        (
            "unit_ids = [1]\n[input_registers]\ncount = 2\n\n[[schedule]]\nkind = \"random_walk\"\ntable = \"input_registers\"\naddress = 0\nevery_ms = 100\nmin = 10\nmax = 5\nstep = 1\n",
            "schedule[0].max",
        ),
        (
            "unit_ids = [1]\n[coils]\ncount = 2\n\n[[schedule]]\nkind = \"toggle\"\ntable = \"holding_registers\"\naddress = 0\nevery_ms = 100\n",
            "schedule[0].address",
        ),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("broken{i}.toml"));
        std::fs::write(&path, text).expect("write the profile");
        let (status, stderr) = run_to_exit(&path);
        assert!(!status.success(), "{text:?} was accepted");
        assert!(
            stderr.contains(key),
            "{text:?}: the error does not name {key}: {stderr}"
        );
    }
    let (status, stderr) = run_to_exit(&dir.path().join("missing.toml"));
    assert!(!status.success());
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

fn run_to_exit(profile: &Path) -> (ExitStatus, String) {
    let stderr = tempfile::NamedTempFile::new().expect("temp file");
    let mut child = Command::new(FEPHA)
        .args([
            "sim",
            "modbus",
            "--listen",
            &free_addr().to_string(),
            "--profile",
        ])
        .arg(profile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr.reopen().expect("reopen"))
        .spawn()
        .expect("start fepha sim modbus");
    let status = wait_exit(&mut child);
    let text = std::fs::read_to_string(stderr.path()).expect("read stderr");
    (status, text)
}
