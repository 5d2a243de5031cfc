#!/usr/bin/env python3
"""Minimal CQL native protocol v4 client, Python standard library only.

Used by start.sh to tell whether a CQL server answers (``probe``) and by
smoke checks to run a few statements (``query``). It is a tool for this
dev launcher, not a driver: no paging, no prepared statements, no auth,
no compression; one connection, one request at a time.

    cql.py probe [--host 127.0.0.1] [--port 9042] [--timeout 2]
        Sends OPTIONS, expects SUPPORTED. Exit 0: a CQL v4 server answers
        (its SUPPORTED map is printed); 1: nothing accepts TCP there;
        2: something accepts TCP but does not speak CQL v4.

    cql.py query [--host ...] [--port ...] [--timeout 10] STATEMENT...
        STARTUP, then each STATEMENT in order at consistency ONE. Rows are
        printed tab-separated with a header line; other results print a
        one-line summary. Exit 0 on success, 3 on a server ERROR.
"""

import argparse
import socket
import struct
import sys
import uuid
import ipaddress
import datetime

VERSION = 0x04
OP_ERROR, OP_STARTUP, OP_READY, OP_OPTIONS, OP_SUPPORTED, OP_QUERY, OP_RESULT = (
    0x00, 0x01, 0x02, 0x05, 0x06, 0x07, 0x08)
CONSISTENCY_ONE = 0x0001


class NotCql(Exception):
    """The peer accepted TCP but did not answer as a CQL v4 server."""


class CqlError(Exception):
    def __init__(self, code, message):
        super().__init__("server error 0x%04x: %s" % (code, message))
        self.code = code


# ---------------------------------------------------------------- encoding

def _string(s):
    b = s.encode("utf-8")
    return struct.pack(">H", len(b)) + b


def _long_string(s):
    b = s.encode("utf-8")
    return struct.pack(">i", len(b)) + b


def _string_map(m):
    out = struct.pack(">H", len(m))
    for k, v in m.items():
        out += _string(k) + _string(v)
    return out


# ---------------------------------------------------------------- decoding

class Reader:
    def __init__(self, buf):
        self.buf = buf
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.buf):
            raise NotCql("truncated frame body")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def byte(self):
        return self.take(1)[0]

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def string(self):
        return self.take(self.short()).decode("utf-8", "replace")

    def string_list(self):
        return [self.string() for _ in range(self.short())]

    def string_multimap(self):
        return {self.string(): self.string_list() for _ in range(self.short())}

    def bytes_(self):
        n = self.int()
        return None if n < 0 else self.take(n)

    def option(self):
        tid = self.short()
        if tid == 0x0000:
            return ("custom", self.string())
        if tid in (0x0020, 0x0022):
            return (tid, self.option())
        if tid == 0x0021:
            return (tid, self.option(), self.option())
        if tid == 0x0030:
            ks, name = self.string(), self.string()
            fields = [(self.string(), self.option()) for _ in range(self.short())]
            return (tid, ks, name, fields)
        if tid == 0x0031:
            return (tid, [self.option() for _ in range(self.short())])
        return (tid,)


def _decode_value(opt, raw):
    """Best-effort rendering of a cell for printing."""
    if raw is None:
        return "null"
    tid = opt[0]
    try:
        if tid in (0x0001, 0x000D, 0x000A):          # ascii, varchar/text
            return raw.decode("utf-8", "replace")
        if tid in (0x0002, 0x0005):                  # bigint, counter
            return str(struct.unpack(">q", raw)[0])
        if tid == 0x0009:                            # int
            return str(struct.unpack(">i", raw)[0])
        if tid == 0x0013:                            # smallint
            return str(struct.unpack(">h", raw)[0])
        if tid == 0x0014:                            # tinyint
            return str(struct.unpack(">b", raw)[0])
        if tid == 0x000E:                            # varint
            return str(int.from_bytes(raw, "big", signed=True))
        if tid == 0x0004:                            # boolean
            return "true" if raw[0] else "false"
        if tid == 0x0007:                            # double
            return repr(struct.unpack(">d", raw)[0])
        if tid == 0x0008:                            # float
            return repr(struct.unpack(">f", raw)[0])
        if tid in (0x000C, 0x000F):                  # uuid, timeuuid
            return str(uuid.UUID(bytes=raw))
        if tid == 0x0010:                            # inet
            return str(ipaddress.ip_address(raw))
        if tid == 0x000B:                            # timestamp (ms)
            ms = struct.unpack(">q", raw)[0]
            return datetime.datetime.fromtimestamp(
                ms / 1000, datetime.timezone.utc).isoformat()
        if tid in (0x0020, 0x0022):                  # list, set
            r = Reader(raw)
            items = [_decode_value(opt[1], r.bytes_()) for _ in range(r.int())]
            return ("[%s]" if tid == 0x0020 else "{%s}") % ", ".join(items)
        if tid == 0x0021:                            # map
            r = Reader(raw)
            items = []
            for _ in range(r.int()):
                k = _decode_value(opt[1], r.bytes_())
                v = _decode_value(opt[2], r.bytes_())
                items.append("%s: %s" % (k, v))
            return "{%s}" % ", ".join(items)
    except Exception:  # fall back to hex below
        pass
    return "0x" + raw.hex()


# ---------------------------------------------------------------- connection

class Connection:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.stream = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise NotCql("connection closed by peer after %d of %d bytes"
                             % (len(buf), n))
            buf += chunk
        return buf

    def request(self, opcode, body=b""):
        self.stream = (self.stream + 1) % 0x7FFF
        header = struct.pack(">BBhBi", VERSION, 0, self.stream, opcode, len(body))
        self.sock.sendall(header + body)
        try:
            rh = self._recv_exact(9)
        except socket.timeout:
            raise NotCql("no answer within the timeout")
        version, _flags, _stream, op, length = struct.unpack(">BBhBi", rh)
        if version & 0x80 == 0 or length < 0 or length > 256 * 1024 * 1024:
            raise NotCql("not a CQL response header: %s" % rh.hex())
        body = self._recv_exact(length)
        if op == OP_ERROR:
            r = Reader(body)
            code = r.int()
            raise CqlError(code, r.string())
        if (version & 0x7F) != VERSION:
            raise NotCql("server answered with protocol version %d" % (version & 0x7F))
        return op, Reader(body)

    def options(self):
        op, r = self.request(OP_OPTIONS)
        if op != OP_SUPPORTED:
            raise NotCql("expected SUPPORTED, got opcode 0x%02x" % op)
        return r.string_multimap()

    def startup(self):
        op, _ = self.request(OP_STARTUP, _string_map({"CQL_VERSION": "3.0.0"}))
        if op != OP_READY:
            raise NotCql("expected READY, got opcode 0x%02x (auth required?)" % op)

    def query(self, cql):
        body = _long_string(cql) + struct.pack(">HB", CONSISTENCY_ONE, 0)
        op, r = self.request(OP_QUERY, body)
        if op != OP_RESULT:
            raise NotCql("expected RESULT, got opcode 0x%02x" % op)
        kind = r.int()
        if kind == 0x0001:
            return ("void",)
        if kind == 0x0003:
            return ("set_keyspace", r.string())
        if kind == 0x0005:
            change, target = r.string(), r.string()
            out = ["schema_change", change, target, r.string()]
            if target in ("TABLE", "TYPE", "FUNCTION", "AGGREGATE"):
                out.append(r.string())
            return tuple(out)
        if kind == 0x0002:
            flags = r.int()
            ncols = r.int()
            if flags & 0x0002:
                r.bytes_()  # paging state
            cols = []
            if not flags & 0x0004:
                global_spec = bool(flags & 0x0001)
                if global_spec:
                    r.string(), r.string()
                for _ in range(ncols):
                    if not global_spec:
                        r.string(), r.string()
                    cols.append((r.string(), r.option()))
            rows = []
            for _ in range(r.int()):
                rows.append([r.bytes_() for _ in range(ncols)])
            return ("rows", cols, rows)
        return ("result_kind_%d" % kind,)


# ---------------------------------------------------------------- commands

def cmd_probe(a):
    try:
        conn = Connection(a.host, a.port, a.timeout)
    except OSError as e:
        print("no TCP listener on %s:%d (%s)" % (a.host, a.port, e), file=sys.stderr)
        return 1
    try:
        supported = conn.options()
    except (NotCql, CqlError, OSError, struct.error) as e:
        print("%s:%d accepts TCP but is not a CQL v4 server: %s" % (a.host, a.port, e),
              file=sys.stderr)
        return 2
    finally:
        conn.close()
    print("CQL v4 server on %s:%d: %s" % (
        a.host, a.port, ", ".join("%s=%s" % (k, "/".join(v)) for k, v in sorted(supported.items()))))
    return 0


def cmd_query(a):
    try:
        conn = Connection(a.host, a.port, a.timeout)
    except OSError as e:
        print("cannot connect to %s:%d: %s" % (a.host, a.port, e), file=sys.stderr)
        return 1
    try:
        conn.startup()
        for stmt in a.statements:
            res = conn.query(stmt)
            if res[0] == "rows":
                _, cols, rows = res
                print("\t".join(name for name, _ in cols))
                for row in rows:
                    print("\t".join(_decode_value(opt, cell)
                                    for (_, opt), cell in zip(cols, row)))
                print("(%d row%s)" % (len(rows), "" if len(rows) == 1 else "s"))
            else:
                print(" ".join(str(x) for x in res))
    except CqlError as e:
        print(str(e), file=sys.stderr)
        return 3
    except (NotCql, OSError, struct.error) as e:
        print("protocol failure: %s" % e, file=sys.stderr)
        return 2
    finally:
        conn.close()
    return 0


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("probe", "query"):
        s = sub.add_parser(name)
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--port", type=int, default=9042)
        s.add_argument("--timeout", type=float, default=2.0 if name == "probe" else 10.0)
        if name == "query":
            s.add_argument("statements", nargs="+", metavar="STATEMENT")
    a = p.parse_args(argv)
    return cmd_probe(a) if a.cmd == "probe" else cmd_query(a)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
