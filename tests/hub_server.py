"""A small stand-in of the Hugging Face Hub's HTTP API for offline tests, served on 127.0.0.1.

It implements what the real `huggingface_hub` client (0.36 and 2.x) calls to create a repository, commit files with
uploads inlined ("regular" upload mode, no LFS/Xet), and read them back (`resolve`, `tree`, model info), so that
`push_to_hub`, `upload_folder`, `hf_hub_download`, `snapshot_download`, `from_pretrained("user/repo")` and
`ModelCard.load("user/repo")` work against it with `HF_ENDPOINT=http://127.0.0.1:<port>`. `/api/validate-yaml`
applies eurobert-hf's offline model-card rules. Files are kept in memory; every request is recorded in `requests`.

Run standalone with `python tests/hub_server.py` (prints the endpoint, serves until interrupted).
"""

import base64
import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eurobert_hf.hub.card_validation import ModelCardMetadataError, validate_model_card  # noqa: E402

USER = "user"
_REPO = r"(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a file, which the Hub reports as a regular file's `oid`/`ETag`."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    """A repository: the files of the `main` branch and its commit history (newest last), with the files of every
    revision in `revisions`."""

    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)
    revisions: list[dict[str, bytes]] = field(default_factory=list)

    @property
    def head(self) -> str:
        return self.commits[-1]

    def commit(self, summary: str) -> str:
        digest = hashlib.sha1(f"{len(self.commits)}:{summary}:{time.time_ns()}".encode())
        for path in sorted(self.files):
            digest.update(path.encode() + git_blob_sha1(self.files[path]).encode())
        self.commits.append(digest.hexdigest())
        self.revisions.append(dict(self.files))
        return self.head


@dataclass
class RecordedRequest:
    method: str
    path: str
    authorization: str | None


class HubState:
    """What the stand-in Hub holds; shared by the handler threads."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[RecordedRequest] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeHub/1.0"
    protocol_version = "HTTP/1.1"
    state: HubState

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - silence the default stderr access log
        return

    # -- plumbing -------------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, message: str, code: str | None = None, head: bool = False) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    def _record(self) -> tuple[str, dict[str, list[str]]]:
        url = urlsplit(self.path)
        with self.state.lock:
            self.state.requests.append(RecordedRequest(self.command, url.path, self.headers.get("Authorization")))
        return unquote(url.path), parse_qs(url.query)

    def _repo(self, repo_id: str, head: bool = False) -> Repo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None:
            self._error(404, f"Repository {repo_id} not found", "RepoNotFound", head=head)
        return repo

    def _check_revision(self, repo: Repo, revision: str, head: bool = False) -> bool:
        if revision in ("main", *repo.commits):
            return True
        self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound", head=head)
        return False

    def _require_token(self) -> bool:
        if (self.headers.get("Authorization") or "").startswith("Bearer "):
            return True
        self._error(401, "Invalid credentials in Authorization header")
        return False

    # -- routes ---------------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._read(head=False)

    def do_HEAD(self) -> None:
        self._read(head=True)

    def _read(self, head: bool) -> None:
        path, query = self._record()
        if path == "/api/whoami-v2":
            self._json(200, {"type": "user", "name": USER, "fullname": USER, "orgs": [], "auth": {}})
        elif match := re.fullmatch(rf"/api/{_REPO}(?:/revision/(?P<rev>.+))?", path):
            self._repo_info(match["repo"], unquote(match["rev"] or "main"))
        elif match := re.fullmatch(rf"/api/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", path):
            self._tree(match["repo"], match["rev"], (match["sub"] or "").strip("/"), "recursive" in query)
        elif match := re.fullmatch(
            r"/(?:(?:datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path
        ):
            self._resolve(match["repo"], match["rev"], match["file"], head)
        else:
            self._error(404, f"Not found: {self.command} {path}", head=head)

    def do_POST(self) -> None:
        path, query = self._record()
        body = self._body()
        if path == "/api/repos/create":
            self._create_repo(json.loads(body or b"{}"))
        elif path == "/api/validate-yaml":
            try:
                validate_model_card(json.loads(body)["content"])
            except ModelCardMetadataError as error:
                self._json(400, {"error": str(error), "errors": [{"message": str(error)}], "warnings": []})
            else:
                self._json(200, {"errors": [], "warnings": []})
        elif match := re.fullmatch(rf"/api/{_REPO}/preupload/(?P<rev>[^/]+)", path):
            self._preupload(match["repo"], json.loads(body))
        elif match := re.fullmatch(rf"/api/{_REPO}/commit/(?P<rev>[^/]+)", path):
            self._commit(match["repo"], unquote(match["rev"]), body, "create_pr" in query)
        else:
            self._error(404, f"Not found: POST {path}")

    def _create_repo(self, payload: dict) -> None:
        if not self._require_token():
            return
        name = payload["name"]
        repo_id = name if "/" in name else f"{payload.get('organization') or USER}/{name}"
        url = f"http://{self.headers['Host']}/{repo_id}"
        with self.state.lock:
            if repo_id in self.state.repos:
                self._json(409, {"error": "You already created this model repo", "url": url})
                return
            repo = Repo()
            repo.files[".gitattributes"] = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
            repo.commit("initial commit")
            self.state.repos[repo_id] = repo
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _repo_info(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id)
        if repo is None or not self._check_revision(repo, revision):
            return
        self._json(
            200,
            {
                "_id": repo_id,
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": repo.head,
                "private": False,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "lastModified": "2026-01-01T00:00:00.000Z",
                "createdAt": "2026-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": name} for name in sorted(repo.files)],
            },
        )

    def _tree(self, repo_id: str, revision: str, subfolder: str, recursive: bool) -> None:
        repo = self._repo(repo_id)
        if repo is None or not self._check_revision(repo, unquote(revision)):
            return
        prefix = f"{subfolder}/" if subfolder else ""
        entries, folders = [], set()
        for name in sorted(repo.files):
            if not name.startswith(prefix):
                continue
            relative = name[len(prefix) :]
            parts = relative.split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                content = repo.files[name]
                entries.append({"type": "file", "oid": git_blob_sha1(content), "size": len(content), "path": name})
        if subfolder and not entries and not folders:
            self._error(404, f"{subfolder} does not exist on main", "EntryNotFound")
            return
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": folder} for folder in sorted(folders)]
        self._json(200, entries)

    def _resolve(self, repo_id: str, revision: str, filename: str, head: bool) -> None:
        repo = self._repo(repo_id, head=head)
        if repo is None or not self._check_revision(repo, unquote(revision), head=head):
            return
        content = repo.files.get(filename)
        if content is None:
            self._error(404, "Entry not found", "EntryNotFound", head=head)
            return
        etag = f'"{git_blob_sha1(content)}"'
        headers = {"X-Repo-Commit": repo.head, "ETag": etag, "Content-Type": "application/octet-stream"}
        self._send(200, content, headers, head=head)

    def _preupload(self, repo_id: str, payload: dict) -> None:
        if not self._require_token() or (repo := self._repo(repo_id)) is None:
            return
        files = [
            {
                "path": item["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_sha1(repo.files[item["path"]]) if item["path"] in repo.files else None,
            }
            for item in payload["files"]
        ]
        self._json(200, {"files": files, "commitOid": repo.head})

    def _commit(self, repo_id: str, revision: str, body: bytes, create_pr: bool) -> None:
        if not self._require_token() or (repo := self._repo(repo_id)) is None:
            return
        if revision != "main" or create_pr:
            self._error(400, "The stand-in Hub only commits to `main` (no branches or pull requests).")
            return
        summary = ""
        with self.state.lock:
            files = dict(repo.files)
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    summary = value.get("summary", "")
                elif key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    files = {name: data for name, data in files.items() if not name.startswith(folder)}
                else:
                    self._error(400, f"Unsupported commit operation {key!r}: the stand-in Hub takes inline files.")
                    return
            repo.files = files
            oid = repo.commit(summary)
        url = f"http://{self.headers['Host']}/{repo_id}/commit/{oid}"
        self._json(200, {"success": True, "commitOid": oid, "commitUrl": url, "pullRequestUrl": None})


class FakeHub:
    """Starts the stand-in Hub on 127.0.0.1 (ephemeral port) in a background thread; use as a context manager."""

    def __init__(self) -> None:
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()

    def files(self, repo_id: str) -> dict[str, bytes]:
        """The files on `main` of a repository."""
        return dict(self.state.repos[repo_id].files)


if __name__ == "__main__":
    with FakeHub() as hub:
        print(f"HF_ENDPOINT={hub.endpoint}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
