"""A Modbus TCP field device for the cluster tests, built on pymodbus (not on our own code).

The test drives it over stdin/stdout, one JSON object per line each way:

    {"op":"set","table":"holding","address":10,"values":[42]}    -> {"ok":true}
    {"op":"get","table":"coil","address":0,"count":4}             -> {"ok":true,"values":[0,1,0,0]}

Tables: coil, discrete_input, holding, input. Addresses are the zero-based protocol addresses a
client puts in its request; bits are 0/1. A request that fails answers {"ok":false,"error":...}.
Once it listens it prints {"ready":true,"listen":"HOST:PORT"} (the real port when given port 0).
It exits when stdin closes, so a test that dies cannot leave it behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from pymodbus import pymodbus_apply_logging_config
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

# The Modbus read function code of each table. pymodbus's simulator picks the table from the
# function code, for run-time access too.
FUNCTION_CODES = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}
BIT_TABLES = {"coil", "discrete_input"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="HOST:PORT to listen on (port 0: any)")
    p.add_argument("--device-id", type=int, default=1, help="Modbus unit id it answers")
    p.add_argument("--coils", type=int, default=64)
    p.add_argument("--discrete-inputs", type=int, default=64)
    p.add_argument("--holding", type=int, default=128)
    p.add_argument("--input", type=int, default=128)
    args = p.parse_args()
    for name in ("coils", "discrete_inputs"):
        # pymodbus stores bits in 16-bit words and pads the last one, so any other size would
        # quietly answer reads past the end instead of with exception 2.
        if getattr(args, name) % 16 or getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be a positive multiple of 16")
    for name in ("holding", "input"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be positive")
    return args


def split_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise SystemExit(f"--listen {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def build_device(args: argparse.Namespace) -> SimDevice:
    # Four separate tables (the tuple form), each from address 0. The shared single-block form
    # would make coils and registers alias each other, which no RTU in our tests does.
    return SimDevice(
        id=args.device_id,
        simdata=(
            [SimData(0, count=args.coils, values=False, datatype=DataType.BITS)],
            [SimData(0, count=args.discrete_inputs, values=False, datatype=DataType.BITS)],
            [SimData(0, count=args.holding, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=args.input, values=0, datatype=DataType.REGISTERS)],
        ),
    )


def check_values(table: str, values: object) -> list[int]:
    if not isinstance(values, list) or not values:
        raise ValueError("values must be a non-empty list")
    limit = 1 if table in BIT_TABLES else 0xFFFF
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= limit:
            raise ValueError(f"value {v!r} is not in 0..={limit} for {table}")
    return values


def check_range(sizes: dict[str, int], table: str, address: int, count: int) -> None:
    # pymodbus refuses these too, but only with "Illegal external call".
    if address + count > sizes[table]:
        raise ValueError(
            f"{table} {address}..={address + count - 1} is outside 0..={sizes[table] - 1}"
        )


async def handle(
    srv: ModbusTcpServer, device_id: int, sizes: dict[str, int], request: dict
) -> dict:
    op = request.get("op")
    table = request.get("table")
    if table not in FUNCTION_CODES:
        raise ValueError(f"unknown table {table!r}; one of {sorted(FUNCTION_CODES)}")
    fc = FUNCTION_CODES[table]
    address = request.get("address")
    if not isinstance(address, int) or not 0 <= address <= 0xFFFF:
        raise ValueError(f"address {address!r} is not in 0..=65535")
    if op == "set":
        values = check_values(table, request.get("values"))
        check_range(sizes, table, address, len(values))
        if table in BIT_TABLES:
            values = [bool(v) for v in values]
        await srv.async_setValues(device_id, fc, address, values)
        return {"ok": True}
    if op == "get":
        count = request.get("count", 1)
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count {count!r} is not a positive integer")
        check_range(sizes, table, address, count)
        values = await srv.async_getValues(device_id, fc, address, count)
        return {"ok": True, "values": [int(v) for v in values]}
    raise ValueError(f"unknown op {op!r}; one of get, set")


def reply(obj: dict) -> None:
    # The test blocks on each answer line, so it must not sit in a buffer.
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main() -> None:
    args = parse_args()
    # Without a handler pymodbus's warnings (why it cannot listen, say) are lost; stderr ends
    # up in the test's failure message.
    pymodbus_apply_logging_config(logging.WARNING)
    host, port = split_host_port(args.listen)
    srv = ModbusTcpServer(context=build_device(args), address=(host, port))
    await srv.serve_forever(background=True)
    bound = srv.transport.sockets[0].getsockname()
    reply({"ready": True, "listen": f"{bound[0]}:{bound[1]}"})

    sizes = {
        "coil": args.coils,
        "discrete_input": args.discrete_inputs,
        "holding": args.holding,
        "input": args.input,
    }
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            answer = await handle(srv, args.device_id, sizes, request)
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the test
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        reply(answer)
    await srv.shutdown()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
