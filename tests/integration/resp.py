"""A small RESP2 client for the tests: one connection, commands as argument
lists, replies as Python values (bulk strings as str, or bytes with
raw=True; errors raised as RespError). Enough for EVAL, pipelines of a few
thousand commands and inspecting keys, without a dependency."""

import socket


class RespError(Exception):
    """An error reply; str() is Redis's message."""


class Resp:
    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def _reply(self, raw):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self._exact(n)
            return data if raw else data.decode("utf-8", "surrogateescape")
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._reply(raw) for _ in range(n)]
        raise ConnectionError(f"unexpected reply {line!r}")

    def call(self, *args, raw=False):
        """One command; an error reply is raised."""
        self.sock.sendall(self.encode(args))
        r = self._reply(raw)
        if isinstance(r, RespError):
            raise r
        return r

    def pipeline(self, commands, raw=False):
        """Many commands in one write; replies in order, errors returned
        (not raised) as RespError values."""
        self.sock.sendall(b"".join(self.encode(c) for c in commands))
        return [self._reply(raw) for _ in commands]
