"""Contract test: what the api answers before any operation is chosen
(api/framing.c), against docs/openapi.yaml's `Framing*` responses and
`BodyTooLarge`.

schemathesis sends only requests that an HTTP client library can form, so
it never meets these answers; here each is sent as raw bytes, and the
answer must have the documented status, a JSON body valid against the
response's schema (its $refs resolved from the file), the response's
required headers with valid values (Connection: close), and the
connection must close after it. 401 and 403 before a body need a token
table, which the contract stack has not: tests/integration/
test_http_surface.py checks them against the operations' own responses.

Runs on the stack of test_openapi.py (API_URL), with its default limits.
"""

import json
import os
import socket
import urllib.parse

import jsonschema_rs
import pytest
import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
with open(os.path.join(REPO, "docs", "openapi.yaml")) as f:
    SPEC = yaml.safe_load(f)

POST = b"POST /api/v1/counter/contract-framing/increment HTTP/1.1\r\nHost: t\r\n"

# (id, response component, status, request bytes)
CASES = [
    ("bad-request-line", "FramingBadRequest", 400, b"GET  /healthz HTTP/1.1\r\n\r\n"),
    ("folded-header", "FramingBadRequest", 400, b"GET /healthz HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n"),
    ("bad-content-length", "FramingBadRequest", 400, POST + b"Content-Length: 1x\r\n\r\n"),
    ("length-and-chunked", "FramingBadRequest", 400,
     POST + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ("chunked", "FramingLengthRequired", 411,
     POST + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
    ("too-large", "BodyTooLarge", 413, POST + b"Content-Length: 1073741824\r\n\r\n"),
    ("uri-too-long", "FramingUriTooLong", 414, b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\n\r\n"),
    ("expect", "FramingExpectationFailed", 417, POST + b"Expect: x\r\nContent-Length: 0\r\n\r\n"),
    ("headers-too-large", "FramingHeadersTooLarge", 431,
     b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"p" * 9000 + b"\r\n\r\n"),
    ("unknown-method", "FramingNotImplemented", 501, b"QUERY /healthz HTTP/1.1\r\n\r\n"),
    ("connect", "FramingNotImplemented", 501, b"CONNECT h.example:443 HTTP/1.1\r\n\r\n"),
    ("http-2", "FramingVersionNotSupported", 505, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
]


def resolve(node):
    """node with every "#/..." $ref of the spec replaced by its target."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = SPEC
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return resolve(target)
        return {k: resolve(v) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v) for v in node]
    return node


@pytest.fixture(scope="module")
def address():
    url = os.environ.get("API_URL", "")
    if not url:
        pytest.fail("the contract test needs the stack's environment; missing: API_URL",
                    pytrace=False)
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port or 80


def exchange(address, data):
    """(status, headers in lower case, body, closed after it)."""
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(data)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except ConnectionResetError:
            pass
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", len(body)))
    return int(lines[0].split()[1]), headers, body[:length], len(body) == length


@pytest.mark.parametrize("component,status,data", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_framing_answer_conforms(address, component, status, data):
    spec = resolve(SPEC["components"]["responses"][component])
    got_status, headers, body, whole = exchange(address, data)
    assert got_status == status, (got_status, body[:300])
    assert whole, "more bytes than the Content-Length before the close"
    assert headers.get("content-type", "").startswith("application/json"), headers
    schema = spec["content"]["application/json"]["schema"]
    jsonschema_rs.validator_for(schema).validate(json.loads(body))
    assert headers.get("connection") == "close", headers
    for name, h in spec.get("headers", {}).items():
        if h.get("required"):
            assert name.lower() in headers, f"{name} missing: {headers}"
            jsonschema_rs.validator_for(h["schema"]).validate(headers[name.lower()])
