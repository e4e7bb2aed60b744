"""A Hugging Face hub on loopback: the part of the hub's HTTP API that huggingface_hub, datasets and fev call.

Served (what the real clients in the venv send, read from their sources):
- repo info: GET /api/{models,datasets}/OWNER/NAME[/revision/REV] (id, sha, siblings);
- listing: GET /api/{type}s/REPO/tree/REV[/PATH]?recursive=... and POST /api/{type}s/REPO/paths-info/REV
  (HfFileSystem, which datasets uses to resolve a config's data files);
- files: HEAD/GET /[datasets/]REPO/resolve/REV/PATH with X-Repo-Commit, ETag and Content-Length (hf_hub_download
  keys its cache on them) and Range requests (HfFileSystem reads ranges);
- uploads: POST /api/validate-yaml (a README's metadata), /api/repos/create, /api/{type}s/REPO/preupload/REV
  (every file "regular": its bytes travel inline in the commit, so no LFS or Xet storage is needed) and
  /api/{type}s/REPO/commit/REV (NDJSON), and GET /api/whoami-v2.
Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound) as the hub's do, which is how
huggingface_hub tells a missing repo from a missing file. Every request is recorded (method, path), so a test
can tell what was fetched and when.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def git_blob_sha(content: bytes) -> str:
    """The oid git gives a blob: what the hub reports as a regular file's ETag and tree oid."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    repo_type: str  # model | dataset | space
    repo_id: str
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[tuple[str, str]] = field(default_factory=list)  # (sha, message), oldest first
    private: bool = False

    @property
    def sha(self) -> str:
        return self.commits[-1][0]

    def commit(self, message: str, added: dict[str, bytes], deleted: list[str] = ()) -> str:
        for path in deleted:
            self.files = {p: c for p, c in self.files.items() if p != path and not p.startswith(path.rstrip("/") + "/")}
        self.files.update(added)
        digest = hashlib.sha1()
        digest.update((self.commits[-1][0] if self.commits else "").encode())
        for path in sorted(self.files):
            digest.update(path.encode() + b"\0" + git_blob_sha(self.files[path]).encode())
        sha = digest.hexdigest()
        self.commits.append((sha, message))
        return sha


class HubState:
    """Repos by (type, id), and the log of requests served."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add_repo(self, repo_type: str, repo_id: str, files: dict[str, bytes] | None = None,
                 message: str = "initial commit") -> Repo:
        repo = Repo(repo_type, repo_id)
        repo.commit(message, dict(files or {}))
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def repo(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get((repo_type, repo_id))


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _split_repo_and_rest(parts: list[str]) -> tuple[str, list[str]]:
    if len(parts) < 2:
        raise HubError(404, "RepoNotFound", "no repo in the path")
    return f"{parts[0]}/{parts[1]}", parts[2:]


class HubHandler(BaseHTTPRequestHandler):
    server: FakeHubServer
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # the request log is self.server.state.requests

    # ----------------------------------------------------------------------------------------- plumbing
    @property
    def state(self) -> HubState:
        return self.server.state

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # httpx streams a commit's NDJSON
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [unquote(p) for p in url.path.split("/") if p]
        with self.state.lock:
            self.state.requests.append((self.command, url.path))
        body = self._body() if self.command in ("POST", "PUT") else b""
        try:
            self._route(parts, query, body)
        except HubError as error:
            headers = {"X-Error-Message": error.message, **error.headers}
            if error.code:
                headers["X-Error-Code"] = error.code
            self._json({"error": error.message}, error.status, headers)

    do_GET = do_HEAD = do_POST = do_PUT = _handle  # noqa: N815 - http.server's names

    # ----------------------------------------------------------------------------------------- routes
    def _route(self, parts: list[str], query: dict[str, str], body: bytes) -> None:
        if parts[:2] == ["api", "whoami-v2"]:
            return self._whoami()
        if parts[:2] == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(body or b"{}"))
        if parts[:3] == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body or b"{}"))
        if len(parts) >= 2 and parts[0] == "api" and parts[1] in REPO_TYPES:
            repo_id, rest = _split_repo_and_rest(parts[2:])
            repo = self._repo(REPO_TYPES[parts[1]], repo_id)
            if not rest:
                return self._info(repo, None)
            action, rest = rest[0], rest[1:]
            if action == "revision" and rest:
                return self._info(repo, "/".join(rest))
            if action == "tree" and rest:
                return self._tree(repo, rest[0], "/".join(rest[1:]), query)
            if action == "paths-info" and rest:
                return self._paths_info(repo, rest[0], body)
            if action == "preupload" and rest:
                return self._preupload(repo, body)
            if action == "commit" and rest:
                return self._commit(repo, "/".join(rest), body)
            raise HubError(404, None, f"no such API route: {self.path}")
        # file downloads: /datasets/OWNER/NAME/resolve/REV/PATH (models without the prefix)
        repo_type = "model"
        if parts and parts[0] in REPO_TYPES:
            repo_type, parts = REPO_TYPES[parts[0]], parts[1:]
        repo_id, rest = _split_repo_and_rest(parts)
        if len(rest) >= 3 and rest[0] == "resolve":
            return self._resolve(self._repo(repo_type, repo_id), rest[1], "/".join(rest[2:]))
        raise HubError(404, None, f"not found: {self.path}")

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.state.repo(repo_type, repo_id)
        if repo is None:
            raise HubError(404, "RepoNotFound", f"Repository Not Found for url: {self.path}.")
        return repo

    def _check_revision(self, repo: Repo, revision: str | None) -> None:
        if revision not in (None, "main", *(sha for sha, _ in repo.commits)):
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    def _info(self, repo: Repo, revision: str | None) -> None:
        self._check_revision(repo, revision)
        self._json({
            "_id": repo.sha[:24], "id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": repo.sha,
            "private": repo.private, "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": path} for path in sorted(repo.files)],
        })

    def _entry(self, repo: Repo, path: str) -> dict:
        if path in repo.files:
            content = repo.files[path]
            return {"type": "file", "oid": git_blob_sha(content), "size": len(content), "path": path}
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}

    def _tree(self, repo: Repo, revision: str, folder: str, query: dict[str, str]) -> None:
        self._check_revision(repo, revision)
        recursive = query.get("recursive", "").lower() in ("1", "true")
        prefix = folder.rstrip("/") + "/" if folder else ""
        if folder and folder in repo.files:
            raise HubError(400, None, f"{folder} is a file, not a folder")
        entries: dict[str, dict] = {}
        for path in sorted(repo.files):
            if not path.startswith(prefix):
                continue
            below = path[len(prefix):].split("/")
            for depth in range(1, len(below)):  # the folders on the way
                if recursive or depth == 1:
                    sub = prefix + "/".join(below[:depth])
                    entries.setdefault(sub, self._entry(repo, sub))
            if recursive or len(below) == 1:
                entries[path] = self._entry(repo, path)
        if folder and not entries:
            raise HubError(404, "EntryNotFound", f"{folder} does not exist on {revision}")
        self._json(list(entries.values()))

    def _paths_info(self, repo: Repo, revision: str, body: bytes) -> None:
        self._check_revision(repo, revision)
        try:
            paths = json.loads(body)["paths"]
        except (ValueError, KeyError):  # sent as a form: paths=a&paths=b
            paths = parse_qs(body.decode()).get("paths", [])
        folders = {"/".join(p.split("/")[:i]) for p in repo.files for i in range(1, p.count("/") + 1)}
        self._json([self._entry(repo, p) for p in paths if p in repo.files or p in folders])

    def _resolve(self, repo: Repo, revision: str, path: str) -> None:
        self._check_revision(repo, revision)
        headers = {"X-Repo-Commit": repo.sha}
        if path not in repo.files:
            # with the commit, as the hub sends it: huggingface_hub then caches that the file is not there
            raise HubError(404, "EntryNotFound", f"Entry not found: {path}", headers)
        content = repo.files[path]
        headers["ETag"] = f'"{git_blob_sha(content)}"'
        headers["Accept-Ranges"] = "bytes"
        ranged = self.headers.get("Range")
        if ranged and ranged.startswith("bytes="):
            first, _, last = ranged.removeprefix("bytes=").partition("-")
            start = int(first) if first else max(len(content) - int(last), 0)
            end = min(int(last), len(content) - 1) if first and last else len(content) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            return self._send(206, content[start:end + 1], headers, "application/octet-stream")
        self._send(200, content, headers, "application/octet-stream")

    def _whoami(self) -> None:
        if not self.headers.get("Authorization"):
            raise HubError(401, None, "Invalid credentials in Authorization header")
        self._json({"type": "user", "name": "tsm-test", "orgs": [],
                    "auth": {"accessToken": {"displayName": "test", "role": "write"}}})

    def _validate_yaml(self, payload: dict) -> None:
        """upload_folder checks a README's metadata here first: the front matter must be a YAML mapping."""
        content = payload.get("content", "")
        if content.startswith("---\n"):
            try:
                metadata = yaml.safe_load(content.split("---\n")[1])
            except yaml.YAMLError as error:
                return self._json({"errors": [{"message": f"invalid YAML: {error}"}]}, 400)
            if not isinstance(metadata, dict):
                return self._json({"errors": [{"message": "the metadata must be a mapping"}]}, 400)
        self._json({"warnings": []})

    def _create_repo(self, payload: dict) -> None:
        if not self.headers.get("Authorization"):
            raise HubError(401, None, "You must be authenticated to create a repo")
        owner = payload.get("organization") or "tsm-test"
        repo_id = f"{owner}/{payload['name']}"
        repo_type = payload.get("type") or "model"
        url = f"{self.server.endpoint}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
        with self.state.lock:
            if self.state.repo(repo_type, repo_id) is not None:  # the hub names the repo in its 409 too
                return self._json({"error": "You already created this repo", "url": url}, 409)
            repo = self.state.add_repo(repo_type, repo_id, {".gitattributes": b"*.safetensors filter=lfs\n"})
            repo.private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self._json({"url": url, "name": repo_id, "id": repo.sha[:24]})

    def _preupload(self, repo: Repo, body: bytes) -> None:
        files = json.loads(body)["files"]
        self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                               "oid": git_blob_sha(repo.files[f["path"]]) if f["path"] in repo.files else None}
                              for f in files]})

    def _commit(self, repo: Repo, revision: str, body: bytes) -> None:
        if not self.headers.get("Authorization"):
            raise HubError(401, None, "You must be authenticated to commit")
        self._check_revision(repo, revision)
        message, added, deleted = "", {}, []
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                message = value.get("summary", "")
            elif item["key"] == "file":
                added[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:  # lfsFile/copies: this hub never asks for LFS, so a client sending one is a bug to see
                raise HubError(400, None, f"unsupported commit operation {item['key']}")
        with self.state.lock:
            sha = repo.commit(message, added, deleted)
        self._json({"success": True, "commitOid": sha, "pullRequestUrl": None,
                    "commitUrl": f"{self.server.endpoint}/{repo.repo_id}/commit/{sha}"})


class FakeHubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: HubState, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), HubHandler)
        self.state = state

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class FakeHub:
    """A started hub: `endpoint` for HF_ENDPOINT, `state` to add repos and read the request log; stop() ends it."""

    def __init__(self, state: HubState | None = None):
        self.state = state or HubState()
        self.server = FakeHubServer(self.state)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="fake-hub", daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def requested(self, needle: str) -> list[tuple[str, str]]:
        with self.state.lock:
            return [r for r in self.state.requests if needle in r[1]]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
