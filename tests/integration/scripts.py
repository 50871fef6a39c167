"""The Redis scripts of redis/ as the services run them, for tests that call
them directly: each script is the concatenation of the .lua files that
redis/CMakeLists.txt lists for it (SCRIPTS), as redis/embed.cmake builds
it. Also the key layout of redis/apply.h: the epoch marker of a key's
slot."""

import os
import re

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REDIS_DIR = os.path.join(REPO, "redis")


def _definitions():
    with open(os.path.join(REDIS_DIR, "CMakeLists.txt")) as f:
        m = re.search(r'set\(SCRIPTS "([^"]+)"\)', f.read())
    assert m, "redis/CMakeLists.txt: no SCRIPTS"
    out = {}
    for part in m.group(1).split("|"):
        name, files = part.split("=")
        out[name] = files.split(",")
    return out


def text(name):
    """The text of script `name` (write, undo, finish, claim, idem, ...)."""
    files = _definitions()[name]
    parts = []
    for f in files:
        with open(os.path.join(REDIS_DIR, f + ".lua")) as fh:
            parts.append(fh.read())
    return "".join(parts)


def fixtures(names):
    """Module fixtures `r` (a RESP connection to the stack's Redis) and
    `sha` ({script name: its sha once loaded}) for tests of the scripts
    `names`: `r, sha = scripts.fixtures(("write", ...))`."""
    from resp import Resp

    @pytest.fixture(scope="module")
    def r(stack):
        with Resp(stack.redis_host, stack.redis_port) as conn:
            yield conn

    @pytest.fixture(scope="module")
    def sha(r):
        return {n: r.call("SCRIPT", "LOAD", text(n)) for n in names}

    return r, sha


def crc16(data):
    """CRC16/XMODEM, Redis Cluster's key hash."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key):
    k = key.encode() if isinstance(key, str) else key
    s = k.find(b"{")
    if s >= 0:
        e = k.find(b"}", s + 1)
        if e > s + 1:
            k = k[s + 1 : e]
    return crc16(k) % 16384


_TAGS = None


def epoch_marker(slot):
    """counter:epoch:3:{TAG}: TAG the smallest number whose text hashes to
    the slot (redis/apply.c, ctr_apply_epoch_key)."""
    global _TAGS
    if _TAGS is None:
        tags, left, i = {}, 16384, 1
        while left:
            s = crc16(str(i).encode()) % 16384
            if s not in tags:
                tags[s] = i
                left -= 1
            i += 1
        _TAGS = tags
    return "counter:epoch:3:{%d}" % _TAGS[slot]
