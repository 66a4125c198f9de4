"""A local STAND-IN for the Hugging Face Hub HTTP API, for tests only. It is not the Hub.

It answers just the calls ``huggingface_hub`` makes to publish a dataset: create a repo, create a
branch, read repo info, list a tree, validate a card, preupload, LFS batch + basic PUT upload, and
commit (files inline as base64, LFS files by oid, deletions). State lives in memory: no git, no
history beyond a commit counter, no permissions beyond one bearer token. Like the Hub, preupload
answers "lfs" for ``*.parquet`` (the pattern a new repo's .gitattributes carries) and for files of
``lfs_threshold`` bytes or more, "regular" for the rest (README.md), so both upload paths run. Xet is not spoken: tests must disable it
(``huggingface_hub.constants.HF_HUB_DISABLE_XET = True``).

Every file a commit brings in is recorded in ``received`` (path, sha256, how it came), every LFS
object PUT in ``lfs_uploads``, every request in ``requests``, so a test can check that files arrived
intact and that a second publish sends nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class _File:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class _Repo:
    private: bool
    branches: dict[str, dict[str, _File]] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class StandinHub:
    """``with StandinHub(token="hf_x") as hub: os.environ["HF_ENDPOINT"] = hub.url``."""

    def __init__(self, token: str | None = None, lfs_threshold: int = 10 * 1024 * 1024):
        self.token = token
        self.lfs_threshold = lfs_threshold
        self.repos: dict[str, _Repo] = {}  # key: "datasets/owner/name"
        self.lfs_store: dict[str, bytes] = {}
        self.received: list[dict[str, Any]] = []
        self.lfs_uploads: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.commits = 0
        #: make the n-th commit request (1-based) fail with a 500, to test resuming
        self.fail_commit_number: int | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "StandinHub":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ test helpers

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "datasets") -> dict[str, bytes]:
        repo = self.repos[f"{repo_type}/{repo_id}"]
        return {p: f.data for p, f in repo.branches[revision].items()}

    def is_lfs(self, repo_id: str, path: str, revision: str = "main") -> bool:
        return self.repos[f"datasets/{repo_id}"].branches[revision][path].lfs

    # ------------------------------------------------------------------ routing

    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        url = urlsplit(raw_path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.requests.append((method, url.path))
        if parts[:2] != ["_standin", "lfs"] and self.token is not None:
            if headers.get("authorization") != f"Bearer {self.token}":
                raise _HubError(401, "Invalid credentials in Authorization header")
        if method == "POST" and parts == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body))
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(body))
        if method == "PUT" and parts[:2] == ["_standin", "lfs"] and len(parts) == 3:
            return self._lfs_put(parts[2], body)
        if method == "POST" and len(parts) == 7 and parts[2].endswith(".git") and parts[3:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(json.loads(body))
        if parts[0] == "api" and len(parts) >= 4 and parts[1] in _TYPES:
            key = f"{parts[1]}/{parts[2]}/{parts[3]}"
            rest = parts[4:]
            with self._lock:
                repo = self.repos.get(key)
            if repo is None:
                raise _HubError(404, f"Repository {key} not found", "RepoNotFound")
            if method == "GET" and (not rest or rest[0] == "revision"):
                return self._repo_info(key, repo, rest[1] if rest else "main")
            if method == "POST" and len(rest) == 2 and rest[0] == "branch":
                return self._create_branch(repo, rest[1], json.loads(body or b"{}"))
            if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                return self._tree(repo, rest[1], "/".join(rest[2:]), query.get("recursive") in ("true", "True", "1"))
            if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                return self._preupload(repo, rest[1], json.loads(body))
            if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                return self._commit(key, repo, rest[1], body)
        raise _HubError(404, f"stand-in hub has no route for {method} {url.path}")

    # ------------------------------------------------------------------ endpoints

    def _create_repo(self, payload: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        rtype = (payload.get("type") or "model") + "s"
        key = f"{rtype}/{payload['organization']}/{payload['name']}"
        url = f"{self.url}/{rtype}/{payload['organization']}/{payload['name']}"
        with self._lock:
            if key in self.repos:
                raise _HubError(409, "You already created this repo", url=url)  # the Hub sends the url too
            repo = _Repo(private=payload.get("visibility") == "private" or bool(payload.get("private")))
            # like the Hub: a new repo starts with one commit holding .gitattributes
            repo.branches["main"] = {".gitattributes": _File(b"*.parquet filter=lfs diff=lfs merge=lfs -text\n", False)}
            repo.heads["main"] = self._next_oid()
            self.repos[key] = repo
        return 200, {"url": url, "name": key.split("/", 1)[1]}, {}

    def _validate_yaml(self, payload: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        content = payload.get("content", "")
        m = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            meta = yaml.safe_load(m.group(1)) if m else None
        except yaml.YAMLError as e:
            return 400, {"errors": [{"message": f"invalid YAML: {e}"}], "warnings": []}, {}
        if not isinstance(meta, dict):
            return 400, {"errors": [{"message": "README.md has no YAML metadata block"}], "warnings": []}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _repo_info(self, key: str, repo: _Repo, revision: str) -> tuple[int, Any, dict[str, str]]:
        branch = self._branch(repo, revision)
        return 200, {
            "id": key.split("/", 1)[1],
            "private": repo.private,
            "sha": repo.heads[revision],
            "siblings": [{"rfilename": p} for p in sorted(branch)],
        }, {}

    def _create_branch(self, repo: _Repo, name: str, payload: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            if name in repo.branches:
                raise _HubError(409, f"Branch {name} already exists")
            start = payload.get("startingPoint") or "main"
            repo.branches[name] = dict(self._branch(repo, start))
            repo.heads[name] = repo.heads[start]
        return 200, {}, {}

    def _tree(self, repo: _Repo, revision: str, path: str, recursive: bool) -> tuple[int, Any, dict[str, str]]:
        branch = self._branch(repo, revision)
        prefix = f"{path.rstrip('/')}/" if path else ""
        entries: dict[str, dict[str, Any]] = {}
        for p, f in sorted(branch.items()):
            if not p.startswith(prefix):
                continue
            rel = p[len(prefix):].split("/")
            if len(rel) > 1:  # the folders on the way
                for depth in range(1, len(rel) if recursive else 2):
                    d = prefix + "/".join(rel[:depth])
                    entries.setdefault(d, {"type": "directory", "oid": git_blob_sha1(d.encode()), "size": 0, "path": d})
                if not recursive:
                    continue
            entry = {"type": "file", "size": len(f.data), "path": p}
            if f.lfs:
                pointer = _lfs_pointer(f.sha256, len(f.data))
                entry["oid"] = git_blob_sha1(pointer)
                entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": len(pointer)}
            else:
                entry["oid"] = git_blob_sha1(f.data)
            entries[p] = entry
        if path and not entries:
            raise _HubError(404, f"{path} not found", "EntryNotFound")
        return 200, list(entries.values()), {}

    def _preupload(self, repo: _Repo, revision: str, payload: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        branch = self._branch(repo, revision)
        files = []
        for item in payload["files"]:
            lfs = item["path"].endswith(".parquet") or item["size"] >= self.lfs_threshold
            current = branch.get(item["path"])
            oid = None
            if current is not None:
                oid = current.sha256 if current.lfs else git_blob_sha1(current.data)
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return 200, {"files": files}, {}

    def _lfs_batch(self, payload: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        objects = []
        for obj in payload["objects"]:
            item: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            with self._lock:
                present = obj["oid"] in self.lfs_store
            if not present:  # the Hub omits actions for objects it already has
                item["actions"] = {"upload": {"href": f"{self.url}/_standin/lfs/{obj['oid']}", "header": {}}}
            objects.append(item)
        return 200, {"transfer": "basic", "objects": objects}, {}

    def _lfs_put(self, oid: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        if hashlib.sha256(body).hexdigest() != oid:
            raise _HubError(400, f"LFS object does not match its oid {oid}")
        with self._lock:
            self.lfs_store[oid] = body
            self.lfs_uploads.append(oid)
        return 200, {}, {}

    def _commit(self, key: str, repo: _Repo, revision: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.commits += 1
            if self.fail_commit_number == self.commits:
                raise _HubError(500, "stand-in: commit failure injected by the test")
            branch = dict(self._branch(repo, revision))
            received = []
            for line in body.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                k, v = item["key"], item["value"]
                if k == "file":
                    data = base64.b64decode(v["content"]) if v.get("encoding") == "base64" else v["content"].encode()
                    branch[v["path"]] = _File(data, False)
                    received.append({"path": v["path"], "sha256": hashlib.sha256(data).hexdigest(), "via": "inline"})
                elif k == "lfsFile":
                    data = self.lfs_store.get(v["oid"])
                    if data is None:
                        raise _HubError(422, f"LFS object {v['oid']} for {v['path']} was never uploaded")
                    branch[v["path"]] = _File(data, True)
                    received.append({"path": v["path"], "sha256": v["oid"], "via": "lfs"})
                elif k == "deletedFile":
                    if branch.pop(v["path"], None) is None:
                        raise _HubError(404, f"A file with this name doesn't exist: {v['path']}", "EntryNotFound")
                elif k == "deletedFolder":
                    for p in [p for p in branch if p.startswith(v["path"].rstrip("/") + "/")]:
                        del branch[p]
                elif k != "header":
                    raise _HubError(400, f"stand-in hub does not know commit item {k!r}")
            repo.branches[revision] = branch
            repo.heads[revision] = oid = self._next_oid()
            self.received.extend(received)
        return 200, {"commitUrl": f"{self.url}/{key}/commit/{oid}", "commitOid": oid, "success": True}, {}

    # ------------------------------------------------------------------ helpers

    def _branch(self, repo: _Repo, revision: str) -> dict[str, _File]:
        if revision not in repo.branches:
            raise _HubError(404, f"Revision {revision} not found", "RevisionNotFound")
        return repo.branches[revision]

    def _next_oid(self) -> str:
        self._oid_counter = getattr(self, "_oid_counter", 0) + 1
        return hashlib.sha1(f"standin-commit-{self._oid_counter}".encode()).hexdigest()


def _make_handler(hub: StandinHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            body = self._body()
            extra: dict[str, str] = {}
            try:
                status, payload, extra = hub.handle(self.command, self.path, self.headers, body)
            except _HubError as e:
                status, payload = e.status, {"error": e.message, **e.extra}
                if e.code:
                    extra = {"X-Error-Code": e.code}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
