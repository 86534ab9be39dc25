"""An IEC 60870-5-104 master (client) for the cluster tests, built on c104 (lib60870-C), not on
our own code.

It is configured once on the command line (--config JSON, see parse_config) and then driven over
stdin/stdout, one JSON object per line each way. Requests carry an "id" and may be sent without
waiting for earlier answers: each one runs on a thread of its own, because a command or an
interrogation blocks until the ACTCON (or c104's command timeout). Answers carry the same id:

    {"id":1,"op":"state","conn":0}                         -> {"id":1,"ok":true,"state":"OPEN"}
    {"id":2,"op":"interrogation","conn":0}                  -> {"id":2,"ok":true,"confirmed":true}
    {"id":3,"op":"command","conn":0,"ioa":5001,"type":"C_SC_NA_1","value":true,"select":true}
                                                            -> {"id":3,"ok":true,"confirmed":true}

A request that fails answers {"id":..,"ok":false,"error":...}. Between answers it writes events,
lines with an "ev" key and a receive order number "seq" shared by all events:

    {"ev":"rx", ...}     a point update the master received (see point_record)
    {"ev":"asdu", ...}   an I frame received or sent, decoded from the raw bytes (see decode_apdu)
    {"ev":"u", ...}      a U frame (STARTDT/STOPDT/TESTFR, act or con) received or sent
    {"ev":"state", ...}  a connection state change as c104 reports it
    {"ev":"unmute", ...} this script sent STARTDT because a link stayed muted (see watchdog)
    {"ev":"new_point"|"new_station"|"unexpected", ...}  what c104 did not expect
    {"ev":"c104_missed_select_con", ...}  this script sent the execute itself (see confirmed)

Confirmations ("confirmed" in an answer) are judged from the frames, not from c104's verdict.

Once the client runs it prints {"ready":true}. It exits when stdin closes, so a test that dies
cannot leave it behind.
"""

# No `from __future__ import annotations`: c104 compares callback annotations with its own
# classes and refuses them as strings.
import argparse
import faulthandler
import json
import sys
import threading
import time

import c104

# c104 is native code: should it crash, every thread's Python stack goes to stderr, which
# the test shows.
faulthandler.enable(all_threads=True)

# How long a link that should be active may stay OPEN_MUTED before this script sends STARTDT:
# about one c104 connection in ten never sends it by itself.
UNMUTE_AFTER_S = 1.0
WATCHDOG_PERIOD_S = 0.02

U_FUNCTIONS = {
    0x07: "STARTDT_ACT",
    0x0B: "STARTDT_CON",
    0x13: "STOPDT_ACT",
    0x23: "STOPDT_CON",
    0x43: "TESTFR_ACT",
    0x83: "TESTFR_CON",
}
QUALITY_FLAGS = ("Overflow", "ElapsedTimeInvalid", "Blocked", "Substituted", "NonTopical", "Invalid")
COUNTER_QUALITY_FLAGS = ("Adjusted", "Carry", "Invalid")

out_lock = threading.Lock()
next_seq = 0


def emit(obj: dict) -> None:
    # Callbacks run on c104's threads and requests on threads of their own: one line at a time.
    with out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def event(kind: str, **fields) -> None:
    """An event with the next receive order number; numbered and written under one lock, so
    the lines come out in order."""
    global next_seq
    with out_lock:
        next_seq += 1
        fields["seq"] = next_seq
        fields["ev"] = kind
        # The wall clock at the master, so that tests can order what two masters received.
        fields["at_ms"] = int(time.time() * 1000)
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def type_name(type_id: int) -> str:
    try:
        return c104.Type(type_id).name
    except Exception:  # noqa: BLE001 - an unknown type id is still logged
        return f"TYPE_{type_id}"


def has_time_tag(name: str) -> bool:
    # M_SP_TB_1, M_ME_TF_1, C_SC_TA_1: the third part starts with T when the type carries a
    # CP24/CP56 time tag.
    parts = name.split("_")
    return len(parts) == 4 and parts[2].startswith("T")


def json_value(v: object) -> object:
    """A point value as JSON: bool, int (double point and step states, scaled values,
    counters, bitstrings) or float."""
    if isinstance(v, (bool, int, float)) or v is None:
        return v
    if isinstance(v, c104.NormalizedFloat):
        return float(v)
    if isinstance(v, c104.Byte32):
        # No int() for it; its repr is <c104.Byte32 value=0b...>.
        text = repr(v)
        return int(text[text.index("0b") :].rstrip(">").strip(), 2)
    try:
        return int(v)  # c104.Double, c104.Step (enums), Int16, Int7
    except (TypeError, ValueError):
        return str(v)


def quality_names(q: object) -> list[str]:
    if q is None:
        return []
    flags = COUNTER_QUALITY_FLAGS if isinstance(q, c104.BinaryCounterQuality) else QUALITY_FLAGS
    cls = type(q)
    # `q & flag` is a (truthy) flag set; is_any() says whether it is empty.
    return [name for name in flags if (q & getattr(cls, name)).is_any()]


def unix_ms(dt: object) -> int | None:
    # c104 hands out naive datetimes in local time (it decodes the UTC wire time into them);
    # timestamp() reads a naive datetime as local time, so this is the UTC instant.
    if dt is None:
        return None
    return round(dt.timestamp() * 1000)


def command_value(type_name_: str, value: object) -> object:
    """The c104 value object for a command of this type from its JSON value."""
    kind = type_name_[:4]
    if kind == "C_SC":
        return bool(value)
    if kind == "C_DC":
        return c104.Double(int(value))
    if kind == "C_RC":
        return c104.Step(int(value))
    if type_name_ in ("C_SE_NA_1", "C_SE_TA_1"):
        return c104.NormalizedFloat(float(value))
    if type_name_ in ("C_SE_NB_1", "C_SE_TB_1"):
        return c104.Int16(int(value))
    if type_name_ in ("C_SE_NC_1", "C_SE_TC_1"):
        return float(value)
    if kind == "C_BO":
        return c104.Byte32(int(value))
    raise ValueError(f"{type_name_} is not a command type this script can send")


def decode_apdu(data: bytes) -> dict | None:
    """What a test wants to know of an APDU. Assumes c104's default sizes (COT 2 bytes, CA 2,
    IOA 3). None for S frames, which carry nothing but a receive count."""
    if len(data) < 6 or data[0] != 0x68:
        return {"ev": "u", "function": "MALFORMED", "hex": data.hex()}
    c1 = data[2]
    if c1 & 0x03 == 0x03:
        return {"ev": "u", "function": U_FUNCTIONS.get(c1, f"U_{c1:02x}")}
    if c1 & 0x01:
        return None
    asdu = data[6:]
    rec: dict = {
        "ev": "asdu",
        "ns": (data[2] | data[3] << 8) >> 1,
        "nr": (data[4] | data[5] << 8) >> 1,
        "hex": asdu.hex(),
    }
    if len(asdu) < 6:
        rec.update(type_id=0, type="SHORT", cot=0, negative=False, test=False, ca=0, oa=0, ioas=[])
        return rec
    type_id, vsq, cot_byte, oa = asdu[0], asdu[1], asdu[2], asdu[3]
    ca = asdu[4] | asdu[5] << 8
    n = vsq & 0x7F
    body = asdu[6:]
    ioas: list[int] = []
    if n and len(body) >= 3:
        if vsq & 0x80:
            first = body[0] | body[1] << 8 | body[2] << 16
            ioas = [first + i for i in range(n)]
        elif len(body) % n == 0:
            step = len(body) // n
            ioas = [body[i] | body[i + 1] << 8 | body[i + 2] << 16 for i in range(0, len(body), step)]
    rec.update(
        type_id=type_id,
        type=type_name(type_id),
        cot=cot_byte & 0x3F,
        negative=bool(cot_byte & 0x40),
        test=bool(cot_byte & 0x80),
        oa=oa,
        ca=ca,
        ioas=ioas,
    )
    try:
        select = c104.explain_bytes_dict(apdu=data).get("select")
    except Exception:  # noqa: BLE001 - the explanation is a bonus
        select = None
    if select is not None:
        rec["select"] = bool(select)
    return rec


class Link:
    """One connection, its station and what the test wants of it."""

    def __init__(self, index: int, con: c104.Connection, station: c104.Station, init: str):
        self.index = index
        self.con = con
        self.station = station
        # Whether the test wants data transfer started; kept across reconnects.
        self.want_active = init != "MUTED"
        self.muted_since: float | None = None
        # The connection (by its `connected_at`) the watchdog last sent STARTDT on.
        self.unmuted_session: object = None
        # Serialises the requests that wait for a confirmation, so they can be told apart.
        self.lock = threading.Lock()
        # The I frames of this link (decoded), for confirm().
        self.asdus: list[dict] = []
        self.asdus_changed = threading.Condition()


class Master:
    def __init__(self, config: dict):
        self.ca = int(config["common_address"])
        self.command_timeout_s = int(config.get("command_timeout_ms", 3000)) / 1000
        self.client = c104.Client(
            tick_rate_ms=int(config.get("tick_rate_ms", 50)),
            command_timeout_ms=int(config.get("command_timeout_ms", 3000)),
        )
        self.links: list[Link] = []
        self.by_con: dict[int, Link] = {}
        for i, spec in enumerate(config["conns"]):
            init = spec.get("init", "NONE")
            con = self.client.add_connection(
                ip=spec["host"], port=int(spec["port"]), init=getattr(c104.Init, init)
            )
            if con is None:
                raise SystemExit(f"c104 refused connection {i} to {spec}")
            station = con.add_station(common_address=self.ca)
            if station is None:
                raise SystemExit(f"c104 refused station {self.ca} on connection {i}")
            link = Link(i, con, station, init)
            self.links.append(link)
            self.by_con[id(con)] = link
            con.on_receive_raw(callable=self.on_receive_raw)
            con.on_send_raw(callable=self.on_send_raw)
            con.on_state_change(callable=self.on_state_change)
            con.on_unexpected_message(callable=self.on_unexpected_message)
            for ioa, tname in config.get("points", []):
                self.add_point(link, int(ioa), tname)
        self.client.on_new_point(callable=self.on_new_point)
        self.client.on_new_station(callable=self.on_new_station)

    # --- c104 callbacks: exact signatures with annotations, or c104 refuses them ---

    def link_of(self, con: c104.Connection) -> int:
        # c104 may hand out a fresh Python wrapper per call; match by address as a fallback.
        link = self.by_con.get(id(con))
        if link is not None:
            return link.index
        for link in self.links:
            if link.con.ip == con.ip and link.con.port == con.port:
                return link.index
        return -1

    def on_receive_raw(self, connection: c104.Connection, data: bytes) -> None:
        self.raw(connection, "rx", data)

    def on_send_raw(self, connection: c104.Connection, data: bytes) -> None:
        self.raw(connection, "tx", data)

    def raw(self, connection: c104.Connection, direction: str, data: bytes) -> None:
        rec = decode_apdu(bytes(data))
        if rec is None:
            return
        kind = rec.pop("ev")
        conn = self.link_of(connection)
        event(kind, conn=conn, dir=direction, **rec)
        if kind == "asdu" and 0 <= conn < len(self.links):
            link = self.links[conn]
            with link.asdus_changed:
                link.asdus.append({"dir": direction, **rec})
                link.asdus_changed.notify_all()

    def on_state_change(self, connection: c104.Connection, state: c104.ConnectionState) -> None:
        event("state", conn=self.link_of(connection), state=state.name)

    def on_unexpected_message(
        self, connection: c104.Connection, message: c104.IncomingMessage, cause: c104.Umc
    ) -> None:
        event(
            "unexpected",
            conn=self.link_of(connection),
            cause=cause.name,
            type=message.type.name,
            cot=int(message.cot),
            ca=message.common_address,
            ioa=message.io_address,
        )

    def on_point(
        self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        try:
            self.point_record(point, message)
        except Exception as exc:  # noqa: BLE001 - a lost record must show up, not kill c104
            print(f"on_receive for IOA {point.io_address}: {exc!r}", file=sys.stderr, flush=True)
        return c104.ResponseState.SUCCESS

    def point_record(self, point: c104.Point, message: c104.IncomingMessage) -> None:
        info = message.info
        tname = point.type.name
        timed = has_time_tag(tname)
        recorded = getattr(info, "recorded_at", None) if timed else None
        station = point.station
        conn = self.link_of(station.connection) if station is not None else -1
        event(
            "rx",
            conn=conn,
            ca=message.common_address,
            ioa=point.io_address,
            type=tname,
            value=json_value(info.value),
            quality=quality_names(getattr(info, "quality", None)),
            cot=int(message.cot),
            cot_name=message.cot.name,
            negative=message.is_negative,
            test=message.is_test,
            time_tag=timed,
            time_ms=unix_ms(recorded),
        )

    def on_new_point(
        self, client: c104.Client, station: c104.Station, io_address: int, point_type: c104.Type
    ) -> None:
        conn = self.link_of(station.connection)
        event("new_point", conn=conn, ca=station.common_address, ioa=io_address, type=point_type.name)
        # Record its data too: a test may want to see what it was not configured for.
        point = station.add_point(io_address=io_address, type=point_type)
        if point is not None:
            point.on_receive(callable=self.on_point)

    def on_new_station(self, client: c104.Client, connection: c104.Connection, common_address: int) -> None:
        event("new_station", conn=self.link_of(connection), ca=common_address)

    # --- points and requests ---

    def add_point(self, link: Link, ioa: int, tname: str) -> c104.Point:
        point = link.station.add_point(io_address=ioa, type=getattr(c104.Type, tname))
        if point is None:
            raise ValueError(f"c104 refused point {ioa} {tname} on connection {link.index}")
        if tname.startswith("M_"):
            point.on_receive(callable=self.on_point)
        return point

    def command_point(self, link: Link, ioa: int, tname: str) -> c104.Point:
        point = link.station.get_point(io_address=ioa)
        if point is not None and point.type.name != tname:
            link.station.remove_point(io_address=ioa)
            point = None
        if point is None:
            point = self.add_point(link, ioa, tname)
        return point

    def confirmed(self, link: Link, tname: str, ioa: int, expected: int, send, execute=None) -> dict:
        """Runs `send` (a c104 call that sends `expected` activations of type `tname` for `ioa`)
        and judges the answer from the frames themselves. c104's own verdict is not reliable
        either way: it sometimes says True for a negative ACTCON (when a second answer for the
        same object follows at once) and sometimes misses a positive one and says False after
        its command timeout.

        Positive means: all `expected` activations were sent, each got an answer, and every
        answer is an ACTCON without the negative bit. "answers" lists them: cot, negative,
        select.

        `execute` sends the execute of a select before operate if c104 did not, though the
        select was confirmed."""
        type_id = int(getattr(c104.Type, tname))
        with link.lock:
            with link.asdus_changed:
                start = len(link.asdus)
            began = time.monotonic()
            c104_says = bool(send())
            took_ms = round((time.monotonic() - began) * 1000)
            # `send` has returned, so c104 sends no more activations; wait for the answers.
            deadline = time.monotonic() + self.command_timeout_s

            def mine() -> tuple[int, list[dict]]:
                frames = [
                    a for a in link.asdus[start:]
                    if a["type_id"] == type_id and (ioa in a["ioas"] or not a["ioas"])
                ]
                sent = sum(1 for a in frames if a["dir"] == "tx" and a["cot"] == 6)
                # ACTCON, or a standard negative answer (unknown type, cause, CA, IOA).
                answers = [a for a in frames if a["dir"] == "rx" and a["cot"] in (7, 44, 45, 46, 47)]
                return sent, answers

            def settle() -> tuple[int, list[dict]]:
                with link.asdus_changed:
                    # The raw callbacks run on c104's threads, maybe after `send` returned.
                    while True:
                        sent, answers = mine()
                        left = deadline - time.monotonic()
                        # The raw callbacks lag behind c104: when it says yes, wait for every
                        # activation and answer; when it says no, fewer may have gone out.
                        if c104_says:
                            done = sent >= expected and len(answers) >= sent
                        else:
                            done = len(answers) >= sent if sent else True
                        if done or left <= 0:
                            return sent, answers
                        link.asdus_changed.wait(left)

            sent, answers = settle()
            # c104 waited its whole timeout in vain (not a quick no after a negative answer), yet
            # the select was confirmed and the execute never went out.
            fallback = (
                execute is not None
                and not c104_says
                and took_ms >= 900 * self.command_timeout_s
                and sent == 1
                and len(answers) == 1
                and answers[0]["cot"] == 7
                and not answers[0]["negative"]
            )
            if fallback:
                event(
                    "c104_missed_select_con", conn=link.index, ioa=ioa, type=tname, c104=c104_says, took_ms=took_ms
                )
                c104_says = bool(execute())
                deadline = time.monotonic() + self.command_timeout_s
                sent, answers = settle()
        positive = (
            sent >= expected
            and len(answers) >= sent
            and all(a["cot"] == 7 and not a["negative"] for a in answers)
        )
        return {
            "confirmed": positive,
            "c104": c104_says,
            "fallback_execute": fallback,
            "sent": sent,
            "answers": [
                {"cot": a["cot"], "negative": a["negative"], "select": a.get("select")} for a in answers
            ],
        }

    def link(self, request: dict) -> Link:
        conn = request.get("conn")
        if not isinstance(conn, int) or not 0 <= conn < len(self.links):
            raise ValueError(f"conn {conn!r} is not in 0..{len(self.links)}")
        return self.links[conn]

    def handle(self, request: dict) -> dict:
        op = request.get("op")
        link = self.link(request)
        con = link.con
        ca = int(request.get("ca", self.ca))
        if op == "state":
            return {"state": con.state.name, "muted": con.is_muted, "connected": con.is_connected}
        if op == "interrogation":
            qoi = c104.Qoi(int(request.get("qoi", 20)))
            # wait_for_response=False: confirmed() waits for the ACTCON itself (c104's wait
            # sometimes misses it and returns False after its timeout).
            return self.confirmed(
                link, "C_IC_NA_1", 0, 1,
                lambda: con.interrogation(
                    common_address=ca, cause=c104.Cot.ACTIVATION, qualifier=qoi, wait_for_response=False
                ),
            )
        if op == "counter_interrogation":
            return self.confirmed(
                link, "C_CI_NA_1", 0, 1,
                lambda: con.counter_interrogation(common_address=ca, wait_for_response=False),
            )
        if op == "clock_sync":
            return self.confirmed(
                link, "C_CS_NA_1", 0, 1, lambda: con.clock_sync(common_address=ca, wait_for_response=False)
            )
        if op == "test":
            return self.confirmed(
                link, "C_TS_TA_1", 0, 1, lambda: con.test(common_address=ca, wait_for_response=False)
            )
        if op == "command":
            tname = request["type"]
            if not tname.startswith("C_"):
                raise ValueError(f"{tname} is not a command type")
            ioa = int(request["ioa"])
            value = command_value(tname, request["value"])
            select = bool(request.get("select"))
            mode = c104.CommandMode.SELECT_AND_EXECUTE if select else c104.CommandMode.DIRECT

            def send() -> bool:
                point = self.command_point(link, ioa, tname)
                point.command_mode = mode
                point.value = value
                return point.transmit(cause=c104.Cot.ACTIVATION)

            def execute() -> bool:
                point = self.command_point(link, ioa, tname)
                point.command_mode = c104.CommandMode.DIRECT
                point.value = value
                return point.transmit(cause=c104.Cot.ACTIVATION)

            # Select before operate sends two activations; c104 sends the execute only after it
            # saw a positive ACTCON of the select, and under load it sometimes misses that one
            # (see confirmed()): then the execute goes out as a direct command, after c104's
            # command timeout.
            return self.confirmed(link, tname, ioa, 2 if select else 1, send, execute if select else None)
        if op == "mute":
            link.want_active = False
            return {"sent": con.mute()}
        if op == "unmute":
            link.want_active = True
            link.muted_since = None
            return {"sent": con.unmute()}
        raise ValueError(
            f"unknown op {op!r}; one of state, interrogation, counter_interrogation, clock_sync, "
            "test, command, mute, unmute"
        )

    def serve(self, request: dict) -> None:
        rid = request.get("id")
        try:
            answer = {"ok": True, **self.handle(request)}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the test
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        answer["id"] = rid
        emit(answer)

    def watchdog(self) -> None:
        """Sends STARTDT on a link the test wants active that stays OPEN_MUTED for a second:
        c104 sometimes never sends it, also after it reconnected by itself.

        Once per connection: a fepha node keeps a STARTDT waiting until it serves, so one is
        enough; and c104 crashes (SIGSEGV) when `unmute()` meets the connection being closed
        by the peer, which a node that is killed does at any time, so fewer calls are fewer
        chances of that."""
        while True:
            now = time.monotonic()
            for link in self.links:
                state = link.con.state.name
                session = link.con.connected_at
                if state != "OPEN_MUTED" or not link.want_active:
                    link.muted_since = None
                elif link.muted_since is None:
                    link.muted_since = now
                elif now - link.muted_since >= UNMUTE_AFTER_S and link.unmuted_session != session:
                    link.unmuted_session = session
                    event("unmute", conn=link.index, sent=link.con.unmute())
            time.sleep(WATCHDOG_PERIOD_S)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        required=True,
        help='JSON: {"conns":[{"host":..,"port":..,"init":"NONE"|"MUTED"|"ALL"|...}],'
        '"common_address":N,"points":[[ioa,"M_SP_TB_1"],...],"tick_rate_ms":N,"command_timeout_ms":N}',
    )
    config = json.loads(p.parse_args().config)
    master = Master(config)
    master.client.start()
    threading.Thread(target=master.watchdog, name="unmute-watchdog", daemon=True).start()
    emit({"ready": True})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
        except ValueError as exc:
            emit({"id": None, "ok": False, "error": f"bad request {line.strip()!r}: {exc}"})
            continue
        threading.Thread(target=master.serve, args=(request,), daemon=True).start()
    master.client.stop()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
