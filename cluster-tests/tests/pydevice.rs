//! The test tools themselves: the pymodbus device answers a Modbus client exactly as its
//! stdin/stdout control says, and the proxy fails one source IP while others go through.
//! Later tests trust both when they judge fepha.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use fepha_cluster_tests::{Proxy, PyDevice, wait_until};
use tokio::net::TcpSocket;
use tokio::runtime::Runtime;
use tokio_modbus::client::{Context, Reader, Writer, tcp};
use tokio_modbus::{ExceptionCode, Slave};

const LIMIT: Duration = Duration::from_secs(10);
const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn any_port() -> SocketAddr {
    SocketAddr::new(HOME, 0)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a runtime for the Modbus client")
}

/// Every client call gets a deadline, so a proxy that swallows a request fails the test
/// instead of hanging it.
fn within<T>(rt: &Runtime, what: &str, f: impl Future<Output = T>) -> T {
    // The timer needs the runtime's context, so it is made inside block_on.
    rt.block_on(async { tokio::time::timeout(LIMIT, f).await })
        .unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
}

/// A Modbus client for unit 1 whose connection leaves from `source`.
async fn client_from(source: IpAddr, to: SocketAddr) -> std::io::Result<Context> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(to).await?;
    Ok(tcp::attach_slave(stream, Slave(1)))
}

/// Reads holding registers from `source`; `Err` if the connection or the request failed.
fn read_from(rt: &Runtime, source: IpAddr, to: SocketAddr) -> Result<Vec<u16>, String> {
    within(rt, "read through the proxy", async {
        let mut ctx = client_from(source, to)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        ctx.read_holding_registers(10, 2)
            .await
            .map_err(|e| format!("request: {e}"))?
            .map_err(|e| format!("exception: {e}"))
    })
}

#[test]
fn the_device_answers_modbus_as_its_control_says() {
    let dev = PyDevice::start(any_port());
    let proxy = Proxy::start(any_port(), dev.addr());
    let rt = runtime();
    let mut ctx = within(&rt, "connect", client_from(HOME, proxy.addr())).expect("connect");

    // Every table starts at zero, at the very addresses a client asks for (no offset of one).
    assert_eq!(dev.get("holding", 0, 3), [0, 0, 0]);
    dev.set("holding", 10, &[42, 43]);
    dev.set("input", 127, &[9]);
    dev.set("coil", 5, &[1, 0, 1]);
    dev.set("discrete_input", 17, &[1]);
    let holding = within(&rt, "read", ctx.read_holding_registers(9, 4));
    assert_eq!(holding.expect("io").expect("no exception"), [0, 42, 43, 0]);
    let input = within(&rt, "read", ctx.read_input_registers(126, 2));
    assert_eq!(input.expect("io").expect("no exception"), [0, 9]);
    let coils = within(&rt, "read", ctx.read_coils(4, 5));
    assert_eq!(
        coils.expect("io").expect("no exception"),
        [false, true, false, true, false]
    );
    let inputs = within(&rt, "read", ctx.read_discrete_inputs(16, 3));
    assert_eq!(
        inputs.expect("io").expect("no exception"),
        [false, true, false]
    );

    // What a master writes, the test reads back.
    within(&rt, "write", ctx.write_single_register(20, 1234))
        .expect("io")
        .expect("no exception");
    within(
        &rt,
        "write",
        ctx.write_multiple_coils(40, &[true, false, true]),
    )
    .expect("io")
    .expect("no exception");
    assert_eq!(dev.get("holding", 19, 3), [0, 1234, 0]);
    assert_eq!(dev.get("coil", 39, 5), [0, 1, 0, 1, 0]);

    // The ends of the tables are where the layout says.
    let past = within(&rt, "read", ctx.read_input_registers(127, 2));
    assert_eq!(past.expect("io"), Err(ExceptionCode::IllegalDataAddress));
    let past = within(&rt, "read", ctx.read_discrete_inputs(63, 2));
    assert_eq!(past.expect("io"), Err(ExceptionCode::IllegalDataAddress));
    assert!(dev.try_get("holding", 128, 1).is_err());
    assert!(dev.try_set("coil", 0, &[2]).is_err());
    assert!(dev.try_get("bogus", 0, 1).is_err());
}

#[test]
fn a_denied_source_is_cut_off_and_others_go_through() {
    let dev = PyDevice::start(any_port());
    dev.set("holding", 10, &[7, 8]);
    let proxy = Proxy::start(any_port(), dev.addr());
    let rt = runtime();
    let report = || {
        format!(
            "accepted from {HOME}: {}, open: {}; from {OTHER}: {}, open: {}",
            proxy.connections_from(HOME),
            proxy.open_from(HOME),
            proxy.connections_from(OTHER),
            proxy.open_from(OTHER)
        )
    };

    let mut home = within(&rt, "connect", client_from(HOME, proxy.addr())).expect("connect");
    let mut other = within(&rt, "connect", client_from(OTHER, proxy.addr())).expect("connect");
    for ctx in [&mut home, &mut other] {
        let regs = within(&rt, "read", ctx.read_holding_registers(10, 2));
        assert_eq!(regs.expect("io").expect("no exception"), [7, 8]);
    }
    assert_eq!(proxy.connections_from(HOME), 1, "{}", report());
    assert_eq!(proxy.connections_from(OTHER), 1, "{}", report());

    proxy.deny(HOME);
    // The proxy cuts on its own thread; once it has, the old connection is dead.
    wait_until(
        LIMIT,
        "the proxy cut the connection from 127.0.0.1",
        || match proxy.open_from(HOME) {
            0 => Ok(()),
            n => Err(format!("{n} open")),
        },
        report,
    );
    let cut = within(&rt, "read", home.read_holding_registers(10, 2));
    assert!(
        cut.is_err(),
        "a read on a cut connection succeeded: {cut:?}"
    );
    let refused = read_from(&rt, HOME, proxy.addr());
    assert!(refused.is_err(), "a denied source got {refused:?}");
    assert_eq!(proxy.connections_from(HOME), 2, "{}", report());

    // The other source's connection, old and new, is untouched.
    let regs = within(&rt, "read", other.read_holding_registers(10, 2));
    assert_eq!(regs.expect("io").expect("no exception"), [7, 8]);
    assert_eq!(read_from(&rt, OTHER, proxy.addr()), Ok(vec![7, 8]));

    proxy.allow(HOME);
    assert_eq!(read_from(&rt, HOME, proxy.addr()), Ok(vec![7, 8]));

    proxy.deny_all();
    wait_until(
        LIMIT,
        "the proxy cut every connection",
        || match proxy.open_from(OTHER) {
            0 => Ok(()),
            n => Err(format!("{n} open")),
        },
        report,
    );
    assert!(read_from(&rt, OTHER, proxy.addr()).is_err());
    proxy.allow_all();
    assert_eq!(read_from(&rt, OTHER, proxy.addr()), Ok(vec![7, 8]));
}
