"""A counting HTTP proxy in front of the local S3 server, for the freshness
bench only (stdlib, no dependency). Each client gets a port of its own
(`--listen uploader=PORT`), so the requests of the uploader, the follower,
the SQL server and the full-day baseline are counted apart; requests are
forwarded unchanged (Host header included, so SigV4 signatures still
verify at the server) over keep-alive connections.

Counted per client, per kind and per area (`raw` or `wh`, the first key
segment under the bucket): requests, bytes sent and received, and for LIST
the keys the listings returned. Kinds: LIST (GET on the bucket with a
list query), GET, HEAD, PUT, COPY (PUT with x-amz-copy-source), DELETE,
POST (multipart and batch deletes).

GET http://127.0.0.1:CONTROL/counts answers the counters as JSON.

    python3 s3count.py --upstream 9000 --control 9100 --listen uploader=9101 --listen follower=9102
"""

import argparse
import http.client
import http.server
import json
import re
import threading
import urllib.parse

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
LOCK = threading.Lock()
COUNTS = {}  # label -> "KIND area" -> {requests, bytes_in, bytes_out, keys, status_4xx, status_5xx}
KEY_RE = re.compile(rb"<Key>")


def kind_and_area(method, target, headers):
    """(kind, area) of one S3 request in path style: /bucket[/key][?query]."""
    url = urllib.parse.urlsplit(target)
    parts = url.path.lstrip("/").split("/", 1)
    key = urllib.parse.unquote(parts[1]) if len(parts) > 1 else ""
    query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
    if method == "GET" and not key:
        prefix = query.get("prefix", [""])[0]
        return "LIST", area_of(prefix)
    kind = method
    if method == "PUT" and headers.get("x-amz-copy-source"):
        kind = "COPY"
    return kind, area_of(key)


def area_of(key):
    return key.split("/", 1)[0] or "-"


def count(label, kind, area, bytes_in, bytes_out, keys, status):
    with LOCK:
        c = COUNTS.setdefault(label, {}).setdefault(
            f"{kind} {area}", {"requests": 0, "bytes_in": 0, "bytes_out": 0, "keys": 0, "status_4xx": 0, "status_5xx": 0}
        )
        c["requests"] += 1
        c["bytes_in"] += bytes_in
        c["bytes_out"] += bytes_out
        c["keys"] += keys
        if 400 <= status < 500:
            c["status_4xx"] += 1
        elif status >= 500:
            c["status_5xx"] += 1


def proxy_handler(label, upstream):
    local = threading.local()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # one line per request would drown the log
            pass

        def body(self):
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            n = int(self.headers.get("content-length") or 0)
            return self.rfile.read(n) if n else b""

        def forward(self):
            data = self.body()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            if data or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(data))
            for attempt in (0, 1):
                conn = getattr(local, "conn", None) or http.client.HTTPConnection("127.0.0.1", upstream, timeout=300)
                local.conn = conn
                try:
                    conn.request(self.command, self.path, body=data, headers=headers)
                    resp = conn.getresponse()
                    payload = resp.read()
                    break
                except (ConnectionError, http.client.HTTPException, OSError):
                    conn.close()
                    local.conn = None
                    if attempt:
                        self.send_error(502, "upstream S3 server unreachable")
                        return
            kind, area = kind_and_area(self.command, self.path, {k.lower(): v for k, v in headers.items()})
            keys = len(KEY_RE.findall(payload)) if kind == "LIST" else 0
            count(label, kind, area, len(data), len(payload), keys, resp.status)
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP and not (k.lower() == "content-length" and self.command != "HEAD"):
                    self.send_header(k, v)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

    return Handler


class Control(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        with LOCK:
            body = json.dumps(COUNTS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", type=int, required=True, help="port of the S3 server on 127.0.0.1")
    ap.add_argument("--control", type=int, required=True, help="port of GET /counts")
    ap.add_argument("--listen", action="append", required=True, help="LABEL=PORT, one per client")
    a = ap.parse_args()
    servers = []
    for spec in a.listen:
        label, port = spec.split("=", 1)
        COUNTS[label] = {}
        s = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), proxy_handler(label, a.upstream))
        s.daemon_threads = True
        servers.append(s)
    control = http.server.ThreadingHTTPServer(("127.0.0.1", a.control), Control)
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    control.serve_forever()


if __name__ == "__main__":
    main()
