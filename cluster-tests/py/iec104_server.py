"""An IEC 60870-5-104 server (controlled station) for the cluster tests, built on c104
(lib60870-C), not on our own code. A simple field device, not a reference: c104 runs one
redundancy group per connection and its negative answers are not what the standard asks.

It listens on --listen HOST:PORT (a real port: c104 cannot report one it picked) and is driven
over stdin/stdout, one JSON object per line each way; requests are handled in order, and an
answer carries the request's "id" if it had one:

    {"op":"add","ca":47,"ioa":100,"type":"M_SP_TB_1","value":true}         -> {"ok":true}
    {"op":"add","ca":47,"ioa":5001,"type":"C_SC_NA_1","select":true,"response":"SUCCESS"}
    {"op":"set","ca":47,"ioa":100,"value":false,"quality":["Invalid"],"cause":"SPONTANEOUS"}
                                                                            -> {"ok":true,"sent":true}
    {"op":"set","ca":47,"ioa":100,"value":true,"quality":["Blocked"],"time_ms":1700000000123,
     "cause":"SPONTANEOUS"}       (a time tag of its own, Unix ms, instead of now)
    {"op":"connections"}                                 -> {"ok":true,"open":1,"active":1}
    {"op":"peers"}   -> {"ok":true,"startdt_acts":1,"stopdt_acts":0,"connects":["127.0.0.1",..]}

"peers" counts the STARTDT and STOPDT acts received over all connections (from the raw frames)
and lists the address of every connection accepted, in order.

"set" without "cause" only changes the value (an interrogation reports it). A command point
answers with its "response" (SUCCESS, FAILURE or NONE) and reports each command it received as
an event line {"ev":"command","seq":N,"ca":..,"ioa":..,"type":..,"value":..,"select":..,"cot":..}.
Once it listens it prints {"ready":true,"listen":"HOST:PORT"}. It exits when stdin closes.
"""

# No `from __future__ import annotations`: c104 compares callback annotations with its own
# classes and refuses them as strings.
import argparse
import faulthandler
import datetime
import json
import sys
import threading

import c104

# c104 is native code: should it crash, every thread's Python stack goes to stderr, which
# the test shows.
faulthandler.enable(all_threads=True)

out_lock = threading.Lock()
next_seq = 0

QUALITY_FLAGS = ("Overflow", "ElapsedTimeInvalid", "Blocked", "Substituted", "NonTopical", "Invalid")


def emit(obj: dict) -> None:
    with out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def event(kind: str, **fields) -> None:
    global next_seq
    with out_lock:
        next_seq += 1
        fields["seq"] = next_seq
        fields["ev"] = kind
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def json_value(v: object) -> object:
    if isinstance(v, (bool, int, float)) or v is None:
        return v
    if isinstance(v, c104.NormalizedFloat):
        return float(v)
    try:
        return int(v)
    except (TypeError, ValueError):
        return str(v)


def c104_value(tname: str, value: object) -> object:
    """The c104 value object of a point of this type from its JSON value."""
    kind = tname[:4]
    if kind in ("M_SP", "C_SC"):
        return bool(value)
    if kind in ("M_DP", "C_DC"):
        return c104.Double(int(value))
    if kind == "C_RC":
        return c104.Step(int(value))
    if kind == "M_ST":
        return c104.Int7(int(value))
    if kind in ("M_IT",):
        return int(value)
    if tname in ("M_ME_NA_1", "M_ME_TA_1", "M_ME_TD_1", "M_ME_ND_1", "C_SE_NA_1", "C_SE_TA_1"):
        return c104.NormalizedFloat(float(value))
    if tname in ("M_ME_NB_1", "M_ME_TB_1", "M_ME_TE_1", "C_SE_NB_1", "C_SE_TB_1"):
        return c104.Int16(int(value))
    if tname in ("M_ME_NC_1", "M_ME_TC_1", "M_ME_TF_1", "C_SE_NC_1", "C_SE_TC_1"):
        return float(value)
    if kind in ("M_BO", "C_BO"):
        # c104 2.2.1's Byte32(int) is always zero; from bytes it works.
        return c104.Byte32(int(value).to_bytes(4, "little"))
    raise ValueError(f"{tname}: this script cannot set its value")


def quality(names: object, counter: bool) -> object:
    cls = c104.BinaryCounterQuality if counter else c104.Quality
    q = cls()
    for name in names or []:
        q = q | getattr(cls, name)
    return q


def timed_info(tname: str, value: object, q: object, at: datetime.datetime) -> object:
    """The c104 information object of a monitoring point with its own time tag."""
    kind = tname[:4]
    v = c104_value(tname, value)
    if kind == "M_SP":
        return c104.SingleInfo(on=v, quality=q, recorded_at=at)
    if kind == "M_DP":
        return c104.DoubleInfo(state=v, quality=q, recorded_at=at)
    if kind == "M_ST":
        return c104.StepInfo(position=v, transient=False, quality=q, recorded_at=at)
    if kind == "M_BO":
        return c104.BinaryInfo(blob=v, quality=q, recorded_at=at)
    if kind == "M_IT":
        return c104.BinaryCounterInfo(counter=v, sequence=c104.UInt5(0), quality=q, recorded_at=at)
    if isinstance(v, c104.NormalizedFloat):
        return c104.NormalizedInfo(actual=v, quality=q, recorded_at=at)
    if isinstance(v, c104.Int16):
        return c104.ScaledInfo(actual=v, quality=q, recorded_at=at)
    if kind == "M_ME":
        return c104.ShortInfo(actual=v, quality=q, recorded_at=at)
    raise ValueError(f"{tname}: this script cannot give it a time tag")


class Device:
    def __init__(self, server: c104.Server):
        self.server = server
        self.responses: dict[tuple[int, int], c104.ResponseState] = {}
        self.lock = threading.Lock()
        self.startdt_acts = 0
        self.stopdt_acts = 0
        self.connects: list[str] = []

    def on_connect(self, server: c104.Server, ip: str) -> bool:
        with self.lock:
            self.connects.append(ip)
        return True

    def on_receive_raw(self, server: c104.Server, data: bytes) -> None:
        data = bytes(data)
        if len(data) >= 6 and data[0] == 0x68 and data[2] & 0x03 == 0x03:
            with self.lock:
                if data[2] == 0x07:
                    self.startdt_acts += 1
                elif data[2] == 0x13:
                    self.stopdt_acts += 1

    def on_command(
        self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        station = point.station
        ca = station.common_address if station is not None else -1
        event(
            "command",
            ca=ca,
            ioa=point.io_address,
            type=point.type.name,
            value=json_value(message.info.value),
            select=message.is_select_command,
            cot=int(message.cot),
        )
        return self.responses.get((ca, point.io_address), c104.ResponseState.SUCCESS)

    def station(self, ca: int) -> c104.Station:
        station = self.server.get_station(common_address=ca)
        if station is None:
            station = self.server.add_station(common_address=ca)
        if station is None:
            raise ValueError(f"c104 refused station {ca}")
        return station

    def point(self, request: dict) -> c104.Point:
        ca, ioa = int(request["ca"]), int(request["ioa"])
        point = self.station(ca).get_point(io_address=ioa)
        if point is None:
            raise ValueError(f"no point {ioa} in station {ca}")
        return point

    def handle(self, request: dict) -> dict:
        op = request.get("op")
        if op == "add":
            ca, ioa, tname = int(request["ca"]), int(request["ioa"]), request["type"]
            mode = c104.CommandMode.SELECT_AND_EXECUTE if request.get("select") else c104.CommandMode.DIRECT
            kwargs = {"command_mode": mode} if tname.startswith("C_") else {}
            point = self.station(ca).add_point(io_address=ioa, type=getattr(c104.Type, tname), **kwargs)
            if point is None:
                raise ValueError(f"c104 refused point {ioa} {tname} in station {ca}")
            if tname.startswith("C_"):
                self.responses[(ca, ioa)] = getattr(c104.ResponseState, request.get("response", "SUCCESS"))
                point.on_receive(callable=self.on_command)
            elif "value" in request:
                point.value = c104_value(tname, request["value"])
            return {}
        if op == "set":
            point = self.point(request)
            tname = point.type.name
            if "value" in request:
                point.value = c104_value(tname, request["value"])
            if "quality" in request:
                point.quality = quality(request["quality"], tname.startswith("M_IT"))
            if "time_ms" in request:
                at = datetime.datetime.fromtimestamp(int(request["time_ms"]) / 1000, tz=datetime.timezone.utc)
                point.info = timed_info(
                    tname,
                    request["value"],
                    quality(request.get("quality"), tname.startswith("M_IT")),
                    at,
                )
            # Setting the value also sets the point's time tag to now.
            cause = request.get("cause")
            if cause is None:
                return {"sent": False}
            return {"sent": point.transmit(cause=getattr(c104.Cot, cause))}
        if op == "response":
            ca, ioa = int(request["ca"]), int(request["ioa"])
            self.responses[(ca, ioa)] = getattr(c104.ResponseState, request["response"])
            return {}
        if op == "connections":
            return {
                "open": self.server.open_connection_count,
                "active": self.server.active_connection_count,
            }
        if op == "peers":
            with self.lock:
                return {
                    "startdt_acts": self.startdt_acts,
                    "stopdt_acts": self.stopdt_acts,
                    "connects": list(self.connects),
                }
        raise ValueError(f"unknown op {op!r}; one of add, set, response, connections, peers")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="HOST:PORT to listen on")
    p.add_argument("--t2-s", type=int, default=None, help="acknowledge received I frames within this (c104: 10 s)")
    args = p.parse_args()
    host, sep, port = args.listen.rpartition(":")
    if not sep or not host:
        raise SystemExit(f"--listen {args.listen!r} is not HOST:PORT")
    server = c104.Server(ip=host.strip("[]"), port=int(port), tick_rate_ms=50, select_timeout_ms=5000)
    if args.t2_s is not None:
        server.protocol_parameters.confirm_interval = args.t2_s
    device = Device(server)
    server.on_connect(callable=device.on_connect)
    server.on_receive_raw(callable=device.on_receive_raw)
    server.start()
    if not server.is_running:
        raise SystemExit(f"c104 server did not start on {args.listen}")
    emit({"ready": True, "listen": args.listen})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            answer = {"ok": True, **device.handle(request)}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the test
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        answer["id"] = request.get("id") if isinstance(request, dict) else None
        emit(answer)
    server.stop()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
