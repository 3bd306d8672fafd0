"""A fake Hugging Face Hub on 127.0.0.1 speaking the HTTP API huggingface_hub's
snapshot_download calls: the revision endpoint (`/api/models/ORG/NAME/revision/REV`), the tree
listing, and HEAD/GET on `/ORG/NAME/resolve/REV/FILE` with ETag, X-Repo-Commit and Range.
Faults are injected per file (`cut`: drop the connection once; `fail`: an HTTP status);
`sha256_etags` makes ETags content hashes, as the Hub's are for LFS files.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = "tiny-org/tiny-model"
SHA = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.cut: dict[str, int] = {}  # file -> bytes sent before the connection drops (once)
        self.fail: dict[str, int] = {}  # file -> HTTP status of every GET
        self.gets: list[tuple[str, str | None]] = []  # (file, Range header)
        self.sha256_etags = False  # ETag = the content's sha256, as the Hub sends for LFS files
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.handle(self, head=True)

            def do_GET(self):
                hub.handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, req, head: bool):
        path = req.path.split("?")[0]
        api = f"/api/models/{REPO}/"
        if path.startswith("/api/models/"):
            if not path.startswith(api):
                return self.error(req, 404, "RepoNotFound")
            kind, _, rev = path[len(api):].partition("/")
            if rev not in ("main", SHA):
                return self.error(req, 404, "RevisionNotFound")
            if kind == "revision":
                body = {"id": REPO, "sha": SHA, "private": False,
                        "siblings": [{"rfilename": f} for f in self.files]}
            else:  # tree
                body = [{"type": "file", "path": f, "size": len(b), "oid": _sha1(b)}
                        for f, b in self.files.items()]
            return self.send(req, 200, json.dumps(body).encode(), {"Content-Type":
                                                                   "application/json"})
        prefix = f"/{REPO}/resolve/"
        if not path.startswith(prefix):
            return self.error(req, 404, "RepoNotFound")
        rev, _, name = path[len(prefix):].partition("/")
        if name not in self.files:
            return self.error(req, 404, "EntryNotFound")
        data = self.files[name]
        etag = hashlib.sha256(data).hexdigest() if self.sha256_etags else _sha1(data)
        headers = {"X-Repo-Commit": SHA, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if head:
            headers["Content-Length"] = str(len(data))
            req.send_response(200)
            for k, v in headers.items():
                req.send_header(k, v)
            req.end_headers()
            return
        rng = req.headers.get("Range")
        self.gets.append((name, rng))
        if name in self.fail:
            return self.error(req, self.fail[name], "")
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        status = 206 if rng else 200
        if rng:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if name in self.cut:  # promise everything, send part, drop the connection
            n = self.cut.pop(name)
            req.send_response(status)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                req.send_header(k, v)
            req.end_headers()
            req.wfile.write(body[:n])
            req.wfile.flush()
            req.close_connection = True
            req.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send(req, status, body, headers)

    def send(self, req, status, body: bytes, headers: dict):
        req.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            req.send_header(k, v)
        req.end_headers()
        req.wfile.write(body)

    def error(self, req, status, code):
        headers = {"X-Error-Code": code} if code else {}
        self.send(req, status, json.dumps({"error": code or "error"}).encode(), headers)


def _sha1(b: bytes) -> str:
    return hashlib.sha1(b).hexdigest()


def tiny_repo_files(folder: Path) -> dict[str, bytes]:
    """A tiny random model as a Hub repo's files, plus files a pull must skip."""
    from engine.testing import make_tiny_model

    d = make_tiny_model(Path(folder) / "m", seed=9, shards=2)
    files = {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}
    files["model.gguf"] = b"GGUF" + bytes(1000)  # not needed: must not be downloaded
    files["README.md"] = b"# tiny\n"
    return files
