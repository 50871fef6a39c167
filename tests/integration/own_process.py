"""A counter process of a test's own, beside the stack's (issue 5).

test_limits.py and test_auth.py start their own counter-api from $BIN_DIR
on a free port, pointed at the stack's Redis, PostgreSQL and Kafka through
the same COUNTER_* environment as the stack's processes (counter.env), plus
the settings under test as environment overrides; the stack's api keeps its
defaults. Each process logs to a file of its own, which is scanned for
sanitizer reports when it stops.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import time

from conftest import SANITIZER_MARKERS, wait_until


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Endpoint:
    """Enough of conftest.Stack for conftest.http_request and Api."""

    def __init__(self, host, port):
        self.api_host = host
        self.api_port = port
        self.api_url = f"http://{host}:{port}"


class OwnProcess:
    """One counter binary (counter-api, counter-persister, counter-applier)
    started by the test. env: extra COUNTER_* settings."""

    def __init__(self, stack, tmp_path, binary, env=None):
        bin_dir = os.environ.get("BIN_DIR") or os.path.join(
            os.path.dirname(__file__), "..", "..", "build", "bin"
        )
        self.path = os.path.join(bin_dir, binary)
        assert os.access(self.path, os.X_OK), f"{self.path} is not built"
        self.binary = binary
        self.stack = stack
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.log_path = os.path.join(str(tmp_path), f"{binary}-{time.monotonic_ns()}.log")
        self.proc = None
        self.returncode = None

    def start(self):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [self.path],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=os.path.dirname(self.log_path),
        )
        return self

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """The exit status; fails if the process is still running then."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.binary} still running {timeout}s after the signal; log:\n"
                + self.log()[-3000:]
            ) from None
        return self.returncode

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit status (SIGKILL if it hangs)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self.returncode = "hung"
        else:
            self.returncode = self.proc.returncode
        self._log.close()
        return self.returncode

    def sanitizer_report(self):
        lines = self.log().splitlines()
        for i, line in enumerate(lines):
            if any(m in line for m in SANITIZER_MARKERS):
                return "\n".join(lines[i : i + 20])
        return None

    def assert_clean_exit(self, timeout=20):
        rc = self.stop(timeout)
        report = self.sanitizer_report()
        assert report is None, f"sanitizer report in {self.binary}'s log:\n{report}"
        assert rc == 0, f"{self.binary} exited with {rc}; log:\n" + self.log()[-3000:]


class OwnApi(OwnProcess):
    """counter-api on a free port; .endpoint works with conftest.Api."""

    def __init__(self, stack, tmp_path, env=None):
        self.port = free_port()
        settings = {"COUNTER_SERVER_BIND": "127.0.0.1", "COUNTER_SERVER_PORT": str(self.port)}
        settings.update(env or {})
        super().__init__(stack, tmp_path, "counter-api", settings)
        self.endpoint = Endpoint("127.0.0.1", self.port)

    def start(self, token=None):
        super().start()

        def up():
            assert self.proc.poll() is None, (
                f"counter-api exited with {self.proc.returncode}:\n" + self.log()[-3000:]
            )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz", headers={"Connection": "close"})
                r = conn.getresponse()
                body = json.loads(r.read())
                conn.close()
            except OSError:
                return False
            return r.status == 200 and body.get("redis") is True and body.get("kafka") is True

        wait_until(up, 60, 0.1, "own counter-api healthy")
        return self

    def metric(self, name, headers=None):
        """One unlabelled sample of /metrics, as a float."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/metrics", headers={"Connection": "close", **(headers or {})})
            r = conn.getresponse()
            text = r.read().decode()
            assert r.status == 200, (r.status, text[:300])
        finally:
            conn.close()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")
