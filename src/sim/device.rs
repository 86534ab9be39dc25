//! The device's memory, how it answers each request, and the schedules that change it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use super::log::{Entry, RequestLog};
use super::profile::{Kind, Profile, Schedule, Table};

/// Most items one request may read or write, from the Modbus application protocol spec
/// (they are what fits in one 253-byte PDU). More answers exception 3.
const MAX_READ_BITS: u16 = 2000;
const MAX_READ_REGISTERS: u16 = 125;
const MAX_WRITE_BITS: usize = 1968;
const MAX_WRITE_REGISTERS: usize = 123;

/// The four Modbus tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Memory {
    pub coils: Vec<bool>,
    pub discrete_inputs: Vec<bool>,
    pub holding_registers: Vec<u16>,
    pub input_registers: Vec<u16>,
}

impl Memory {
    fn from_profile(p: &Profile) -> Memory {
        fn filled<T: Copy + Default>(count: u32, values: &[T]) -> Vec<T> {
            let mut v = values.to_vec();
            v.resize(count as usize, T::default());
            v
        }
        Memory {
            coils: filled(p.coils.count, &p.coils.values),
            discrete_inputs: filled(p.discrete_inputs.count, &p.discrete_inputs.values),
            holding_registers: filled(p.holding_registers.count, &p.holding_registers.values),
            input_registers: filled(p.input_registers.count, &p.input_registers.values),
        }
    }

    fn bits(&mut self, table: Table) -> Option<&mut Vec<bool>> {
        match table {
            Table::Coils => Some(&mut self.coils),
            Table::DiscreteInputs => Some(&mut self.discrete_inputs),
            _ => None,
        }
    }

    fn registers(&mut self, table: Table) -> Option<&mut Vec<u16>> {
        match table {
            Table::HoldingRegisters => Some(&mut self.holding_registers),
            Table::InputRegisters => Some(&mut self.input_registers),
            _ => None,
        }
    }
}

/// A handle on a running simulated device: cheap to clone, shared by every connection.
#[derive(Debug, Clone)]
pub(crate) struct Device {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    memory: Mutex<Memory>,
    units: [bool; 256],
    log: Option<Mutex<RequestLog>>,
    requests: Mutex<HashMap<SocketAddr, u64>>,
    /// How long a write takes to be confirmed (the profile's `write_delay_ms`).
    write_delay: Duration,
}

/// Our critical sections cannot panic half-way, so a poisoned lock still guards consistent
/// data; keep serving rather than stop the device.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Device {
    pub(crate) fn new(profile: &Profile, log: Option<RequestLog>) -> Device {
        let mut units = [false; 256];
        for &u in &profile.unit_ids {
            units[usize::from(u)] = true;
        }
        Device {
            inner: Arc::new(Inner {
                memory: Mutex::new(Memory::from_profile(profile)),
                units,
                log: log.map(Mutex::new),
                requests: Mutex::new(HashMap::new()),
                write_delay: Duration::from_millis(profile.write_delay_ms),
            }),
        }
    }

    /// A copy of the device's tables as they are now.
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> Memory {
        lock(&self.inner.memory).clone()
    }

    /// How many requests each client (ip:port) has sent since the device started.
    #[cfg(test)]
    pub(crate) fn requests_per_client(&self) -> std::collections::BTreeMap<SocketAddr, u64> {
        lock(&self.inner.requests)
            .iter()
            .map(|(a, n)| (*a, *n))
            .collect()
    }

    /// Answers one request from `client`, counts it and logs it.
    pub(crate) fn answer(
        &self,
        client: SocketAddr,
        req: &SlaveRequest<'_>,
    ) -> Result<Response, ExceptionCode> {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let result = if self.inner.units[usize::from(req.slave)] {
            execute(&mut lock(&self.inner.memory), &req.request)
        } else {
            // No such unit behind this address: what a gateway answers when the target does
            // not respond. Unlike exception 2 it cannot be mistaken for a wrong register
            // address in the poller's configuration, and unlike silence it costs no timeout.
            Err(ExceptionCode::GatewayTargetDevice)
        };
        *lock(&self.inner.requests).entry(client).or_insert(0) += 1;
        let Some(log) = &self.inner.log else {
            return result;
        };
        let (function, address, count) = describe(&req.request);
        let entry = Entry {
            time_ms,
            client,
            unit: req.slave,
            fc: req.request.function_code().value(),
            function,
            address,
            count,
            exception: result.as_ref().err().map(|e| u8::from(*e)),
        };
        let mut log = lock(log);
        match log.write(&entry) {
            Ok(()) => result,
            Err(e) => {
                // The log is the evidence of who polled when; an answer the log does not
                // show would make it lie, so the client gets a device failure instead (a
                // write may still have taken effect, as exception 4 allows).
                tracing::warn!(
                    "cannot write to the request log {}: {e}",
                    log.path().display()
                );
                Err(ExceptionCode::ServerDeviceFailure)
            }
        }
    }

    /// Runs the schedules forever; the caller drops this future to stop them.
    pub(crate) async fn run_schedules(self, profile: &Profile) -> Infallible {
        let start = Instant::now();
        let mut running: Vec<Running> = profile
            .schedules
            .iter()
            .enumerate()
            .map(|(i, s)| Running {
                every: Duration::from_millis(s.every_ms),
                next: start + Duration::from_millis(s.every_ms),
                rng: SplitMix64(profile.seed_of(i, s)),
                schedule: s.clone(),
            })
            .collect();
        loop {
            let Some(due) = running.iter().map(|r| r.next).min() else {
                return std::future::pending().await;
            };
            tokio::time::sleep_until(due).await;
            let now = Instant::now();
            // Everything due is applied under one lock, so values that change together (the
            // two bits of a double indication) are never read half-changed.
            let mut memory = lock(&self.inner.memory);
            for r in running.iter_mut().filter(|r| r.next <= now) {
                r.apply(&mut memory);
                r.next += r.every;
                if r.next <= now {
                    // Late (a stalled machine): skip the missed steps rather than burst.
                    r.next = now + r.every;
                }
            }
        }
    }
}

/// One tokio-modbus service per connection, so that each request knows its client.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) device: Device,
    pub(crate) peer: SocketAddr,
}

impl Service for Connection {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = futures::future::Either<
        Ready<Result<Response, ExceptionCode>>,
        futures::future::BoxFuture<'static, Result<Response, ExceptionCode>>,
    >;

    /// A write is applied (and logged) when it arrives and confirmed `write_delay_ms` later,
    /// as a breaker confirms once it has moved.
    fn call(&self, req: Self::Request) -> Self::Future {
        let answer = self.device.answer(self.peer, &req);
        let delay = self.device.inner.write_delay;
        if delay.is_zero() || !is_write(&req.request) {
            return futures::future::Either::Left(ready(answer));
        }
        futures::future::Either::Right(Box::pin(async move {
            tokio::time::sleep(delay).await;
            answer
        }))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let n = lock(&self.device.inner.requests)
            .get(&self.peer)
            .copied()
            .unwrap_or(0);
        tracing::info!("{} disconnected after {n} requests", self.peer);
    }
}

/// The addresses `address .. address + quantity` of a table of `len`, or exception 2.
fn span(address: u16, quantity: usize, len: usize) -> Result<Range<usize>, ExceptionCode> {
    let start = usize::from(address);
    let end = start + quantity;
    if end > len {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(start..end)
}

/// A read's quantity must be 1..=max, or exception 3 (checked before the address, as the
/// spec orders it).
fn read_span(
    address: u16,
    quantity: u16,
    max: u16,
    len: usize,
) -> Result<Range<usize>, ExceptionCode> {
    if quantity == 0 || quantity > max {
        return Err(ExceptionCode::IllegalDataValue);
    }
    span(address, usize::from(quantity), len)
}

fn write_span(
    address: u16,
    quantity: usize,
    max: usize,
    len: usize,
) -> Result<Range<usize>, ExceptionCode> {
    if quantity == 0 || quantity > max {
        return Err(ExceptionCode::IllegalDataValue);
    }
    span(address, quantity, len)
}

fn read<T: Copy>(table: &[T], range: Range<usize>) -> Result<Vec<T>, ExceptionCode> {
    table
        .get(range)
        .map(<[T]>::to_vec)
        .ok_or(ExceptionCode::IllegalDataAddress)
}

fn write<T: Copy>(table: &mut [T], range: Range<usize>, values: &[T]) -> Result<(), ExceptionCode> {
    table
        .get_mut(range)
        .ok_or(ExceptionCode::IllegalDataAddress)?
        .copy_from_slice(values);
    Ok(())
}

fn execute(m: &mut Memory, req: &Request<'_>) -> Result<Response, ExceptionCode> {
    use Request as Q;
    match req {
        Q::ReadCoils(a, n) => {
            let r = read_span(*a, *n, MAX_READ_BITS, m.coils.len())?;
            Ok(Response::ReadCoils(read(&m.coils, r)?))
        }
        Q::ReadDiscreteInputs(a, n) => {
            let r = read_span(*a, *n, MAX_READ_BITS, m.discrete_inputs.len())?;
            Ok(Response::ReadDiscreteInputs(read(&m.discrete_inputs, r)?))
        }
        Q::ReadHoldingRegisters(a, n) => {
            let r = read_span(*a, *n, MAX_READ_REGISTERS, m.holding_registers.len())?;
            Ok(Response::ReadHoldingRegisters(read(
                &m.holding_registers,
                r,
            )?))
        }
        Q::ReadInputRegisters(a, n) => {
            let r = read_span(*a, *n, MAX_READ_REGISTERS, m.input_registers.len())?;
            Ok(Response::ReadInputRegisters(read(&m.input_registers, r)?))
        }
        Q::WriteSingleCoil(a, v) => {
            let r = span(*a, 1, m.coils.len())?;
            write(&mut m.coils, r, &[*v])?;
            Ok(Response::WriteSingleCoil(*a, *v))
        }
        Q::WriteSingleRegister(a, v) => {
            let r = span(*a, 1, m.holding_registers.len())?;
            write(&mut m.holding_registers, r, &[*v])?;
            Ok(Response::WriteSingleRegister(*a, *v))
        }
        Q::WriteMultipleCoils(a, values) => {
            let r = write_span(*a, values.len(), MAX_WRITE_BITS, m.coils.len())?;
            write(&mut m.coils, r, values)?;
            let n = u16::try_from(values.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
            Ok(Response::WriteMultipleCoils(*a, n))
        }
        Q::WriteMultipleRegisters(a, values) => {
            let r = write_span(
                *a,
                values.len(),
                MAX_WRITE_REGISTERS,
                m.holding_registers.len(),
            )?;
            write(&mut m.holding_registers, r, values)?;
            let n = u16::try_from(values.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
            Ok(Response::WriteMultipleRegisters(*a, n))
        }
        // A plain register device: no diagnostics, file records, FIFOs or identification.
        _ => Err(ExceptionCode::IllegalFunction),
    }
}

fn is_write(req: &Request<'_>) -> bool {
    matches!(
        req,
        Request::WriteSingleCoil(..)
            | Request::WriteSingleRegister(..)
            | Request::WriteMultipleCoils(..)
            | Request::WriteMultipleRegisters(..)
            | Request::MaskWriteRegister(..)
            | Request::ReadWriteMultipleRegisters(..)
    )
}

/// The function's name and the address range it touches, for the log.
fn describe(req: &Request<'_>) -> (&'static str, Option<u16>, Option<u16>) {
    use Request as Q;
    let len = |n: usize| u16::try_from(n).ok();
    match req {
        Q::ReadCoils(a, n) => ("read_coils", Some(*a), Some(*n)),
        Q::ReadDiscreteInputs(a, n) => ("read_discrete_inputs", Some(*a), Some(*n)),
        Q::ReadHoldingRegisters(a, n) => ("read_holding_registers", Some(*a), Some(*n)),
        Q::ReadInputRegisters(a, n) => ("read_input_registers", Some(*a), Some(*n)),
        Q::WriteSingleCoil(a, _) => ("write_single_coil", Some(*a), Some(1)),
        Q::WriteSingleRegister(a, _) => ("write_single_register", Some(*a), Some(1)),
        Q::WriteMultipleCoils(a, v) => ("write_multiple_coils", Some(*a), len(v.len())),
        Q::WriteMultipleRegisters(a, v) => ("write_multiple_registers", Some(*a), len(v.len())),
        Q::MaskWriteRegister(a, _, _) => ("mask_write_register", Some(*a), Some(1)),
        Q::ReadWriteMultipleRegisters(a, n, _, _) => {
            ("read_write_multiple_registers", Some(*a), Some(*n))
        }
        Q::ReportServerId => ("report_server_id", None, None),
        Q::ReadDeviceIdentification(_, _) => ("read_device_identification", None, None),
        Q::Custom(_, _) => ("other", None, None),
    }
}

/// A schedule with its next due time.
struct Running {
    schedule: Schedule,
    every: Duration,
    next: Instant,
    rng: SplitMix64,
}

impl Running {
    fn apply(&mut self, m: &mut Memory) {
        let s = &self.schedule;
        let i = usize::from(s.address);
        if s.kind == Kind::Toggle {
            if let Some(bit) = m.bits(s.table).and_then(|t| t.get_mut(i)) {
                *bit = !*bit;
            }
            return;
        }
        // Validated by the profile: registers table, min <= max, step >= 1.
        let (Some(min), Some(max), Some(step)) = (s.min, s.max, s.step) else {
            return;
        };
        let Some(value) = m.registers(s.table).and_then(|t| t.get_mut(i)) else {
            return;
        };
        // A client may have written anything meanwhile (holding registers): restart from
        // within the range.
        let v = (*value).clamp(min, max);
        *value = match s.kind {
            Kind::Ramp => v.checked_add(step).filter(|n| *n <= max).unwrap_or(min),
            _ => {
                let up = self.rng.next() & 1 == 1;
                let higher = v.checked_add(step).filter(|n| *n <= max);
                let lower = v.checked_sub(step).filter(|n| *n >= min);
                // At an edge it steps back inside; if the range is narrower than one step, it
                // stays.
                match (up, higher, lower) {
                    (true, Some(n), _) | (false, _, Some(n)) => n,
                    (_, Some(n), None) | (_, None, Some(n)) => n,
                    (_, None, None) => v,
                }
            }
        };
    }
}

/// SplitMix64: a tiny PRNG of our own, so a seed gives the same walk in every build, whatever
/// version of `rand` the workspace ends up with.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const PROFILE: &str = r#"
unit_ids = [1, 2]
[coils]
count = 4
values = [true]
[discrete_inputs]
count = 2
values = [true, false]
[holding_registers]
count = 4
values = [7, 8]
[input_registers]
count = 2

[[schedule]]
kind = "toggle"
table = "discrete_inputs"
address = 0
every_ms = 10
[[schedule]]
kind = "toggle"
table = "discrete_inputs"
address = 1
every_ms = 10
[[schedule]]
kind = "ramp"
table = "input_registers"
address = 0
min = 0
max = 10
step = 4
every_ms = 10
[[schedule]]
kind = "random_walk"
table = "input_registers"
address = 1
min = 100
max = 104
step = 3
every_ms = 10
"#;

    fn profile() -> Profile {
        Profile::parse(Path::new("t.toml"), PROFILE).expect("test profile")
    }

    fn client() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40000))
    }

    fn ask(d: &Device, unit: u8, request: Request<'static>) -> Result<Response, ExceptionCode> {
        d.answer(
            client(),
            &SlaveRequest {
                slave: unit,
                request,
            },
        )
    }

    #[test]
    fn answers() {
        let d = Device::new(&profile(), None);
        assert_eq!(
            ask(&d, 1, Request::ReadCoils(0, 4)),
            Ok(Response::ReadCoils(vec![true, false, false, false]))
        );
        assert_eq!(
            ask(&d, 2, Request::ReadHoldingRegisters(1, 3)),
            Ok(Response::ReadHoldingRegisters(vec![8, 0, 0]))
        );
        assert_eq!(
            ask(&d, 3, Request::ReadHoldingRegisters(0, 1)),
            Err(ExceptionCode::GatewayTargetDevice)
        );
        assert_eq!(
            ask(&d, 1, Request::ReadHoldingRegisters(3, 2)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            ask(&d, 1, Request::ReadHoldingRegisters(u16::MAX, 125)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            ask(&d, 1, Request::ReadHoldingRegisters(0, 0)),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            ask(&d, 1, Request::ReadInputRegisters(0, 126)),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            ask(&d, 1, Request::WriteSingleCoil(4, true)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            ask(&d, 1, Request::WriteMultipleRegisters(2, vec![5, 6].into())),
            Ok(Response::WriteMultipleRegisters(2, 2))
        );
        assert_eq!(
            ask(
                &d,
                1,
                Request::WriteMultipleCoils(1, vec![true, true].into())
            ),
            Ok(Response::WriteMultipleCoils(1, 2))
        );
        assert_eq!(
            ask(
                &d,
                1,
                Request::WriteMultipleCoils(3, vec![true, true].into())
            ),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            ask(&d, 1, Request::MaskWriteRegister(0, 0, 0)),
            Err(ExceptionCode::IllegalFunction)
        );
        let m = d.snapshot();
        assert_eq!(m.holding_registers, [7, 8, 5, 6]);
        assert_eq!(m.coils, [true, true, true, false]);
        assert_eq!(d.requests_per_client().get(&client()), Some(&12));
    }

    #[test]
    fn schedules_step() {
        let p = profile();
        let mut m = Memory::from_profile(&p);
        let mut running: Vec<Running> = p
            .schedules
            .iter()
            .enumerate()
            .map(|(i, s)| Running {
                schedule: s.clone(),
                every: Duration::from_millis(10),
                next: Instant::now(),
                rng: SplitMix64(p.seed_of(i, s)),
            })
            .collect();
        let mut ramp = Vec::new();
        let mut walk = Vec::new();
        for _ in 0..6 {
            for r in &mut running {
                r.apply(&mut m);
            }
            // The double indication stays complementary.
            assert_ne!(m.discrete_inputs[0], m.discrete_inputs[1]);
            ramp.push(m.input_registers[0]);
            walk.push(m.input_registers[1]);
        }
        assert_eq!(ramp, [4, 8, 0, 4, 8, 0]);
        assert!(walk.iter().all(|v| (100..=104).contains(v)), "{walk:?}");
        assert!(
            walk.windows(2).all(|w| w[0].abs_diff(w[1]) == 3),
            "{walk:?}"
        );
    }
}
