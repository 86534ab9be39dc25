"""A raw-socket IEC 60870-5-104 controlled station for the cluster tests: a field device that
can misbehave on purpose, written from the standard with plain sockets (no c104, no fepha code),
and that records every frame it receives, per connection.

It listens on --listen HOST:PORT (port 0 picks one; the ready line says which) for common
address --ca and holds single points (IOA -> bool, M_SP_NA_1 in an interrogation answer,
M_SP_TB_1 when sent spontaneously). Its behaviour is the current --mode, which a request can
change at any time (it applies to connections already open too):

    good              answers STARTDT/STOPDT/TESTFR, acknowledges I frames (S frame each), answers
                      a station interrogation (ACTCON, the points, ACTTERM), a counter
                      interrogation and a clock sync (ACTCON, ACTTERM), and single/double commands
                      (ACTCON then ACTTERM, select and execute alike)
    silent_startdt    as good, but never answers STARTDT act
    close_on_startdt  as good, but closes the connection when STARTDT act comes
    bad_ns            as good, but after its interrogation answer sends an I frame whose N(S) is
                      5 ahead of what it should be
    unknown_type      as good, but after its interrogation answer sends an I frame of type 99
                      (no such type in 60870-5-101/104), then a spontaneous change of the lowest
                      IOA (its value flipped, time tagged a second back) with the right sequence
                      numbers
    garbage           as good, but after STARTDT con sends bytes that are no APDU at all

With --test-idle-s S, a connection that has not started data transfer S seconds after it was
accepted gets a TESTFR act (once); whether a TESTFR con comes back is in its "u" events.

Requests on stdin, one JSON object per line, answered in order with their "id":

    {"op":"mode","mode":"good"}                          -> {"ok":true}
    {"op":"set","ioa":1,"value":true}                    -> {"ok":true}   (no transmission)
    {"op":"spont","ioa":1,"value":true,"time_ms":N}      -> {"ok":true,"sent":2}
        a spontaneous M_SP_TB_1 on every started connection (time_ms: the time tag, default now)
    {"op":"queue","ioa":1,"value":true,"time_ms":N}      -> {"ok":true}
        sets the point now (the next interrogation answer has it) and queues its spontaneous
        M_SP_TB_1, sent right after that answer: a device whose answers go before its queue
    {"op":"close_all"}                                   -> {"ok":true,"closed":1}

Events on stdout, each with "ev" and a running "seq":

    {"ev":"accepted","conn":N,"peer":"IP:PORT"}
    {"ev":"closed","conn":N,"why":"..."}
    {"ev":"u","conn":N,"dir":"rx"|"tx","function":"STARTDT_ACT"}
    {"ev":"s","conn":N,"nr":K}                           an S frame received
    {"ev":"i","conn":N,"ns":..,"nr":..,"type_id":..,"cot":..,"negative":..,"select":..,"ca":..,
     "ioa":..,"hex":".."}                                an I frame received
    {"ev":"sent","conn":N,"what":"bad_ns"|"unknown_type"|"garbage"|"gi_answer"|...}

Once it listens it prints {"ready":true,"listen":"HOST:PORT"}. It exits when stdin closes.
"""

import argparse
import datetime
import json
import socket
import sys
import threading
import time

U_FUNCTIONS = {
    0x07: "STARTDT_ACT",
    0x0B: "STARTDT_CON",
    0x13: "STOPDT_ACT",
    0x23: "STOPDT_CON",
    0x43: "TESTFR_ACT",
    0x83: "TESTFR_CON",
}
U_CODES = {name: code for code, name in U_FUNCTIONS.items()}
MODES = ("good", "silent_startdt", "close_on_startdt", "bad_ns", "unknown_type", "garbage")

out_lock = threading.Lock()
next_seq = 0


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
        fields["at_ms"] = int(time.time() * 1000)
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def cp56(ms: int) -> bytes:
    """CP56Time2a of a Unix time in milliseconds (UTC)."""
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    millis = t.second * 1000 + t.microsecond // 1000
    return bytes(
        [
            millis & 0xFF,
            millis >> 8,
            t.minute,
            t.hour,
            t.day | (t.isoweekday() << 5),
            t.month,
            t.year % 100,
        ]
    )


def ioa3(ioa: int) -> bytes:
    return bytes([ioa & 0xFF, (ioa >> 8) & 0xFF, (ioa >> 16) & 0xFF])


def asdu(type_id: int, cot: int, ca: int, objects: list[bytes], negative: bool = False) -> bytes:
    """An ASDU with COT 2 bytes (originator 0), CA 2 bytes, SQ=0; objects carry their IOA."""
    cot_byte = cot | (0x40 if negative else 0)
    return bytes([type_id, len(objects), cot_byte, 0, ca & 0xFF, ca >> 8]) + b"".join(objects)


class Conn:
    def __init__(self, device: "Device", index: int, sock: socket.socket, peer: str):
        self.device = device
        self.index = index
        self.sock = sock
        self.peer = peer
        self.lock = threading.Lock()
        self.ns = 0  # N(S) of the next I frame we send
        self.nr = 0  # N(S) we expect next from the master
        self.started = False
        self.closed = False
        self.accepted_at = time.monotonic()
        self.tested = False

    # --- sending ---

    def write(self, data: bytes) -> bool:
        with self.lock:
            if self.closed:
                return False
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False

    def send_u(self, name: str) -> None:
        if self.write(bytes([0x68, 4, U_CODES[name], 0, 0, 0])):
            event("u", conn=self.index, dir="tx", function=name)

    def send_s(self) -> None:
        nr = self.nr << 1
        self.write(bytes([0x68, 4, 0x01, 0, nr & 0xFF, nr >> 8]))

    def send_i(self, body: bytes, ns_offset: int = 0) -> bool:
        with self.lock:
            ns = (self.ns + ns_offset) % 32768
            self.ns = (self.ns + 1) % 32768
            nr = self.nr
        ns2, nr2 = ns << 1, nr << 1
        apci = bytes([0x68, 4 + len(body), ns2 & 0xFF, ns2 >> 8, nr2 & 0xFF, nr2 >> 8])
        return self.write(apci + body)

    def close(self, why: str) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
        event("closed", conn=self.index, why=why)

    # --- receiving ---

    def run(self) -> None:
        buf = b""
        why = "the master closed"
        try:
            while True:
                chunk = self.sock.recv(4096)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 2:
                    if buf[0] != 0x68:
                        why = f"bad start byte {buf[0]:#x}"
                        raise ConnectionError(why)
                    n = buf[1]
                    if len(buf) < 2 + n:
                        break
                    apdu, buf = buf[: 2 + n], buf[2 + n :]
                    self.on_apdu(apdu)
        except OSError as exc:
            why = f"{type(exc).__name__}: {exc}"
        self.close(why)

    def on_apdu(self, apdu: bytes) -> None:
        c1 = apdu[2]
        if c1 & 0x03 == 0x03:
            name = U_FUNCTIONS.get(c1, f"U_{c1:02x}")
            event("u", conn=self.index, dir="rx", function=name)
            self.on_u(name)
            return
        if c1 & 0x01:
            event("s", conn=self.index, nr=(apdu[4] | apdu[5] << 8) >> 1)
            return
        ns = (apdu[2] | apdu[3] << 8) >> 1
        nr = (apdu[4] | apdu[5] << 8) >> 1
        body = apdu[6:]
        rec = {"conn": self.index, "ns": ns, "nr": nr, "hex": body.hex()}
        if len(body) >= 9:
            rec.update(
                type_id=body[0],
                cot=body[2] & 0x3F,
                negative=bool(body[2] & 0x40),
                ca=body[4] | body[5] << 8,
                ioa=body[6] | body[7] << 8 | body[8] << 16,
            )
            if body[0] in (45, 46, 47, 58, 59, 60) and len(body) >= 10:
                rec["select"] = bool(body[9] & 0x80)
        event("i", **rec)
        with self.lock:
            self.nr = (ns + 1) % 32768
        self.send_s()
        if len(body) >= 9:
            self.on_request(body)

    def on_u(self, name: str) -> None:
        mode = self.device.mode
        if name == "STARTDT_ACT":
            if mode == "silent_startdt":
                return
            if mode == "close_on_startdt":
                self.close("refused STARTDT")
                return
            self.started = True
            self.send_u("STARTDT_CON")
            if mode == "garbage":
                if self.write(b"\x00\xffTHIS IS NOT IEC 104\x16\x16\x68\x01\x00"):
                    event("sent", conn=self.index, what="garbage")
        elif name == "STOPDT_ACT":
            self.started = False
            self.send_u("STOPDT_CON")
        elif name == "TESTFR_ACT":
            self.send_u("TESTFR_CON")

    def on_request(self, body: bytes) -> None:
        type_id, cot, ca = body[0], body[2] & 0x3F, body[4] | body[5] << 8
        dev = self.device
        if cot != 6:
            return
        if ca != dev.ca and ca != 0xFFFF:
            self.send_i(bytes([body[0], body[1], 46 | 0x40]) + body[3:])
            return
        if type_id == 100:  # C_IC_NA_1
            self.send_i(bytes([body[0], body[1], 7]) + body[3:])
            with dev.lock:
                points = sorted(dev.points.items())
            if points:
                objects = [ioa3(ioa) + bytes([1 if v else 0]) for ioa, v in points]
                self.send_i(asdu(1, 20, dev.ca, objects))
            self.send_i(bytes([body[0], body[1], 10]) + body[3:])
            event("sent", conn=self.index, what="gi_answer")
            self.after_gi()
        elif type_id in (101, 103):  # C_CI_NA_1, C_CS_NA_1
            self.send_i(bytes([body[0], body[1], 7]) + body[3:])
            if type_id == 101:
                self.send_i(bytes([body[0], body[1], 10]) + body[3:])
        elif type_id in (45, 46, 58, 59):  # single/double commands
            self.send_i(bytes([body[0], body[1], 7]) + body[3:])
            if not body[9] & 0x80:  # an execute
                self.send_i(bytes([body[0], body[1], 10]) + body[3:])
        else:
            self.send_i(bytes([body[0], body[1], 44 | 0x40]) + body[3:])

    def after_gi(self) -> None:
        dev = self.device
        with dev.lock:
            queued, dev.queued = dev.queued, []
        for ioa, value, at in queued:
            body = asdu(30, 3, dev.ca, [ioa3(ioa) + bytes([1 if value else 0]) + cp56(at)])
            if self.send_i(body):
                event("sent", conn=self.index, what="queued", ioa=ioa, value=value)
        mode = dev.mode
        if mode == "bad_ns":
            body = asdu(1, 3, dev.ca, [ioa3(dev.lowest()) + b"\x01"])
            if self.send_i(body, ns_offset=5):
                event("sent", conn=self.index, what="bad_ns")
        elif mode == "unknown_type":
            body = asdu(99, 3, dev.ca, [ioa3(dev.lowest()) + b"\x01\x02\x03"])
            if self.send_i(body):
                event("sent", conn=self.index, what="unknown_type")
            ioa = dev.lowest()
            with dev.lock:
                dev.points[ioa] = not dev.points.get(ioa, False)
                value = dev.points[ioa]
            # A time tag a second back, so that it cannot be mistaken for the time the master
            # received the interrogation answer just before.
            at = int(time.time() * 1000) - 1000
            body = asdu(30, 3, dev.ca, [ioa3(ioa) + bytes([1 if value else 0]) + cp56(at)])
            if self.send_i(body):
                event("sent", conn=self.index, what="after_unknown_type", ioa=ioa, value=value)


class Device:
    def __init__(self, ca: int, mode: str, test_idle_s: float | None):
        self.ca = ca
        self.mode = mode
        self.test_idle_s = test_idle_s
        self.lock = threading.Lock()
        self.points: dict[int, bool] = {}
        self.queued: list[tuple[int, bool, int]] = []
        self.conns: list[Conn] = []

    def lowest(self) -> int:
        with self.lock:
            return min(self.points) if self.points else 1

    def accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, addr = listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                conn = Conn(self, len(self.conns), sock, f"{addr[0]}:{addr[1]}")
                self.conns.append(conn)
            event("accepted", conn=conn.index, peer=conn.peer)
            threading.Thread(target=conn.run, daemon=True).start()

    def idle_tester(self) -> None:
        while self.test_idle_s is not None:
            now = time.monotonic()
            with self.lock:
                conns = list(self.conns)
            for c in conns:
                if not c.closed and not c.started and not c.tested and now - c.accepted_at >= self.test_idle_s:
                    c.tested = True
                    c.send_u("TESTFR_ACT")
            time.sleep(0.05)

    def handle(self, request: dict) -> dict:
        op = request.get("op")
        if op == "mode":
            mode = request["mode"]
            if mode not in MODES:
                raise ValueError(f"mode {mode!r} is not one of {MODES}")
            self.mode = mode
            return {}
        if op == "set":
            with self.lock:
                self.points[int(request["ioa"])] = bool(request["value"])
            return {}
        if op == "spont":
            ioa, value = int(request["ioa"]), bool(request["value"])
            with self.lock:
                self.points[ioa] = value
                conns = [c for c in self.conns if c.started and not c.closed]
            at = int(request.get("time_ms") or time.time() * 1000)
            body = asdu(30, 3, self.ca, [ioa3(ioa) + bytes([1 if value else 0]) + cp56(at)])
            return {"sent": sum(1 for c in conns if c.send_i(body))}
        if op == "queue":
            ioa, value = int(request["ioa"]), bool(request["value"])
            at = int(request.get("time_ms") or time.time() * 1000)
            with self.lock:
                self.points[ioa] = value
                self.queued.append((ioa, value, at))
            return {}
        if op == "close_all":
            with self.lock:
                conns = [c for c in self.conns if not c.closed]
            for c in conns:
                c.close("closed by the test")
            return {"closed": len(conns)}
        raise ValueError(f"unknown op {op!r}; one of mode, set, spont, queue, close_all")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="HOST:PORT to listen on")
    p.add_argument("--ca", type=int, default=1, help="the common address")
    p.add_argument("--mode", default="good", choices=MODES)
    p.add_argument("--test-idle-s", type=float, default=None)
    args = p.parse_args()
    host, sep, port = args.listen.rpartition(":")
    if not sep or not host:
        raise SystemExit(f"--listen {args.listen!r} is not HOST:PORT")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(16)
    device = Device(args.ca, args.mode, args.test_idle_s)
    threading.Thread(target=device.accept, args=(listener,), daemon=True).start()
    threading.Thread(target=device.idle_tester, daemon=True).start()
    bound = listener.getsockname()
    emit({"ready": True, "listen": f"{bound[0]}:{bound[1]}"})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            answer = {"ok": True, **device.handle(request)}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the test
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        answer["id"] = request.get("id") if isinstance(request, dict) else None
        emit(answer)
    listener.close()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
