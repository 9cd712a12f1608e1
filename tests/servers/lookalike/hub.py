"""A Hugging Face Hub look-alike (resolve endpoint, API, errors) plus a separate CDN host.

Wire format as the real Hub (see huggingface_hub ``file_download.py`` / ``utils/_http.py``):

* ``HEAD|GET /{repo}/resolve/{rev}/{path}`` (``/datasets/...``, ``/spaces/...``): LFS files answer ``302`` to
  the CDN host with ``X-Repo-Commit``, ``X-Linked-Etag`` (quoted sha256), ``X-Linked-Size`` and ``ETag`` (the
  pointer's git oid); regular files answer ``200`` with ``ETag`` = git blob sha1 and honour ``Range``.
  Renamed repos (``gpt2`` -> ``openai-community/gpt2``) answer ``307`` with a relative ``Location``.
* Errors carry ``X-Error-Code``/``X-Error-Message``: ``RepoNotFound`` (401 anonymous, 404 with a valid
  token), ``GatedRepo`` (401 without token, 403 with a token lacking access), ``RevisionNotFound``,
  ``EntryNotFound`` (404).  An unknown token is a 401 "Invalid credentials in Authorization header".
* ``GET /api/{models|datasets|spaces}/{repo}[/revision/{rev}]`` (``?blobs=true`` adds sizes and LFS info) and
  ``GET /api/.../{repo}/tree/{rev}[/{path}]?recursive=true`` (paginated with a ``Link: rel="next"`` header).
* The CDN serves ``/repos/xx/yy/{sha256}`` only with a valid, unexpired signature, honouring ``Range``.

Run standalone: ``python -m tests.servers.lookalike.hub --port 8080 --cdn-port 8081 [--data DIR] [--delay-ms 20]``.
``DIR`` holds ``models/OWNER/NAME/...`` (and ``datasets/...``) trees; an optional ``.hub.json`` in a repo folder sets
``{"gated": true, "private": true, "aliases": ["oldname"]}``.  Without ``--data`` the demo repos are served.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

from . import (
    LookalikeServer,
    Request,
    Response,
    git_blob_sha1,
    json_response,
    pseudo_random_bytes,
    serve_bytes,
    sign,
    signature_ok,
)

GOOD_TOKEN = "hf_LookalikeGoodToken0123456789abcdefXYZ"
NOACCESS_TOKEN = "hf_LookalikeNoAccessToken0123456789abcdef"
LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".gguf",
    ".pt",
    ".pth",
    ".ckpt",
    ".onnx",
    ".h5",
    ".msgpack",
    ".parquet",
    ".arrow",
    ".zip",
    ".tar",
    ".gz",
    ".npz",
    ".model",
)
LFS_THRESHOLD = 10 * 1024 * 1024
KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}
PREFIX = {"model": "", "dataset": "/datasets", "space": "/spaces"}


@dataclass
class HubFile:
    path: str
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def git_sha1(self) -> str:
        return git_blob_sha1(self.data)

    @property
    def pointer(self) -> bytes:
        spec = "version https://git-lfs.github.com/spec/v1"
        return f"{spec}\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def oid(self) -> str:
        """The git object id in the repo: of the pointer for LFS files, of the content otherwise."""
        return git_blob_sha1(self.pointer) if self.lfs else self.git_sha1


@dataclass
class HubRepo:
    repo_type: str
    repo_id: str
    commits: dict[str, dict[str, HubFile]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    private: bool = False

    def commit_for(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        if len(revision) == 40 and revision in self.commits:
            return revision
        return None


class HubData:
    """Repos, their commits and files; blobs by sha256 for the CDN."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], HubRepo] = {}
        self.aliases: dict[tuple[str, str], str] = {}
        self.blobs: dict[str, HubFile] = {}
        self.full_tokens: set[str] = {GOOD_TOKEN}
        self.noaccess_tokens: set[str] = {NOACCESS_TOKEN}
        self.tree_page_size = 1000
        self.corrupt: set[str] = set()  # paths served with their first byte flipped (listed hashes unchanged)
        self.fail_once: set[str] = set()  # paths whose next GET on the Hub answers 503 (then normally)

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        repo_type: str = "model",
        gated: bool = False,
        private: bool = False,
        aliases: tuple[str, ...] = (),
        lfs: tuple[str, ...] | None = None,
    ) -> HubRepo:
        repo = HubRepo(repo_type, repo_id, gated=gated, private=private)
        self.repos[(repo_type, repo_id)] = repo
        for alias in aliases:
            self.aliases[(repo_type, alias)] = repo_id
        self.commit(repo, files, lfs=lfs)
        return repo

    def commit(
        self,
        repo: HubRepo,
        files: dict[str, bytes],
        *,
        branch: str = "main",
        lfs: tuple[str, ...] | None = None,
        tags: tuple[str, ...] = (),
    ) -> str:
        entries = {}
        for path, data in files.items():
            is_lfs = (
                path in lfs if lfs is not None else (path.endswith(LFS_SUFFIXES) or len(data) > LFS_THRESHOLD)
            )
            entries[path] = HubFile(path, data, is_lfs)
            if is_lfs:
                self.blobs[entries[path].sha256] = entries[path]
        digest = hashlib.sha1(f"{repo.repo_id}:{len(repo.commits)}".encode())
        for path in sorted(entries):
            digest.update(f"{path}:{entries[path].oid}".encode())
        sha = digest.hexdigest()
        repo.commits[sha] = entries
        repo.refs[branch] = sha
        for tag in tags:
            repo.refs[tag] = sha
        return sha

    def served(self, entry: HubFile) -> bytes:
        """The bytes the Hub and its CDN send for ``entry``: its data, or a corrupted copy (``corrupt``)."""
        if entry.path not in self.corrupt or not entry.data:
            return entry.data
        return bytes([entry.data[0] ^ 1]) + entry.data[1:]

    @classmethod
    def demo(cls) -> HubData:
        """The repos tests (and scripts/uat) use."""
        data = cls()
        gpt2 = data.add_repo(
            "openai-community/gpt2",
            {
                "README.md": b"# GPT-2 (v1)\n",
                "config.json": b'{"model_type": "gpt2", "n_layer": 12}\n',
            },
            aliases=("gpt2",),
        )
        gpt2.refs["v1.0"] = gpt2.refs["main"]
        data.commit(
            gpt2,
            {
                "README.md": b"---\nlicense: mit\n---\n# GPT-2\n\nA look-alike of openai-community/gpt2.\n",
                "config.json": b'{"model_type": "gpt2", "n_layer": 12, "n_head": 12}\n',
                "model.safetensors": pseudo_random_bytes("gpt2-model", 300_000),
                "tokenizer/vocab.json": b'{"hello": 0, "world": 1}\n',
                "onnx/decoder_model.onnx": pseudo_random_bytes("gpt2-onnx", 50_000),
            },
        )
        gpt2.refs["refs/pr/1"] = gpt2.refs["main"]
        data.add_repo(
            "acme/tiny-model",
            {
                "README.md": b"# tiny\n",
                "config.json": b'{"hidden": 8}\n',
                "weights/model.safetensors": pseudo_random_bytes("tiny-st", 1_200_000),
                "weights/model.bin": pseudo_random_bytes("tiny-bin", 40_000),
                "weights/extra/notes.txt": b"nested notes\n",
            },
        )
        data.add_repo(
            "acme/gated-model",
            {
                "README.md": b"# gated\n",
                "model.safetensors": pseudo_random_bytes("gated", 120_000),
            },
            gated=True,
        )
        data.add_repo(
            "acme/private-model", {"model.gguf": pseudo_random_bytes("private", 10_000)}, private=True
        )
        data.add_repo(
            "acme/tiny-dataset",
            {
                "README.md": b"# a dataset\n",
                "data/train.parquet": pseudo_random_bytes("ds", 30_000),
            },
            repo_type="dataset",
        )
        return data

    @classmethod
    def from_directory(cls, root: Path) -> HubData:
        data = cls()
        for kind_dir, repo_type in KINDS.items():
            base = root / kind_dir
            if not base.is_dir():
                continue
            for meta_parent in sorted(p for p in base.glob("*/*") if p.is_dir()):
                repo_id = f"{meta_parent.parent.name}/{meta_parent.name}"
                meta_file = meta_parent / ".hub.json"
                meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
                files = {
                    str(p.relative_to(meta_parent)): p.read_bytes()
                    for p in sorted(meta_parent.rglob("*"))
                    if p.is_file() and p.name != ".hub.json"
                }
                data.add_repo(
                    repo_id,
                    files,
                    repo_type=repo_type,
                    gated=bool(meta.get("gated")),
                    private=bool(meta.get("private")),
                    aliases=tuple(meta.get("aliases", ())),
                )
        return data


def _error(
    status: int, code: str | None, message: str, extra: list[tuple[str, str]] | None = None
) -> Response:
    headers = [("X-Error-Message", message), *(extra or [])]
    if code:
        headers.append(("X-Error-Code", code))
    return json_response(status, {"error": message}, headers)


class HubApp:
    """Routes for the Hub host; ``cdn_url`` is where LFS redirects point."""

    def __init__(self, data: HubData, cdn_url: str) -> None:
        self.data = data
        self.cdn_url = cdn_url.rstrip("/")

    # -- access ----------------------------------------------------------------------------------------
    def _token_state(self, request: Request) -> str:
        token = request.bearer
        if token is None:
            return "anonymous"
        if token in self.data.full_tokens:
            return "full"
        if token in self.data.noaccess_tokens:
            return "user"
        return "invalid"

    def _repo(self, request: Request, repo_type: str, repo_id: str, for_download: bool) -> HubRepo | Response:
        state = self._token_state(request)
        if state == "invalid":
            return _error(401, None, "Invalid credentials in Authorization header")
        repo = self.data.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and state != "full"):
            status = 401 if state == "anonymous" else 404
            return _error(status, "RepoNotFound", "Repository not found")
        if repo.gated and for_download and state != "full":
            if state == "anonymous":
                return _error(
                    401,
                    "GatedRepo",
                    f"Access to model {repo_id} is restricted. You must have access "
                    "to it and be authenticated to access it. Please log in.",
                )
            return _error(
                403,
                "GatedRepo",
                f"Access to model {repo_id} is restricted and you are not in the "
                "authorized list. Visit the repo page to ask for access.",
            )
        return repo

    def _alias(self, repo_type: str, repo_id: str) -> str | None:
        return self.data.aliases.get((repo_type, repo_id))

    # -- routing ---------------------------------------------------------------------------------------
    def __call__(self, request: Request) -> Response:
        segs = request.path.split("/")[1:]
        if segs and segs[0] == "api" and len(segs) >= 3 and segs[1] in KINDS:
            return self.api(request, KINDS[segs[1]], segs[2:])
        repo_type = "model"
        if segs and segs[0] in ("datasets", "spaces"):
            repo_type = KINDS[segs[0]]
            segs = segs[1:]
        for i in (2, 1):
            if len(segs) > i + 2 and segs[i] == "resolve":
                return self.resolve(
                    request, repo_type, [unquote(s) for s in segs[:i]], segs[i + 1], segs[i + 2 :]
                )
        return Response(404, b"Not Found", [("Content-Type", "text/plain")])

    def resolve(
        self, request: Request, repo_type: str, repo_parts: list[str], raw_rev: str, raw_path: list[str]
    ) -> Response:
        repo_id = "/".join(repo_parts)
        new = self._alias(repo_type, repo_id)
        if new is not None:
            location = f"{PREFIX[repo_type]}/{new}/resolve/{raw_rev}/{'/'.join(raw_path)}"
            return Response(
                307,
                f"Temporary Redirect. Redirecting to {location}".encode(),
                [("Location", location), ("Content-Type", "text/plain; charset=utf-8")],
            )
        repo = self._repo(request, repo_type, repo_id, for_download=True)
        if isinstance(repo, Response):
            return repo
        revision = unquote(raw_rev)
        commit = repo.commit_for(revision)
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        path = unquote("/".join(raw_path))
        entry = repo.commits[commit].get(path)
        if entry is None:
            return _error(
                404, "EntryNotFound", f'{path} does not exist on "{revision}"', [("X-Repo-Commit", commit)]
            )
        common = [
            ("X-Repo-Commit", commit),
            ("Access-Control-Expose-Headers", "X-Repo-Commit,X-Linked-Etag,X-Linked-Size,ETag,Location"),
        ]
        name = path.rsplit("/", 1)[-1]
        if request.method == "GET" and path in self.data.fail_once:
            self.data.fail_once.discard(path)
            return Response(503, b"Service Unavailable", [("Content-Type", "text/plain")])
        if entry.lfs:
            location = self.cdn_location(entry, name)
            body = f"Found. Redirecting to {location}".encode()
            return Response(
                302,
                body,
                [
                    *common,
                    ("Location", location),
                    ("X-Linked-Etag", f'"{entry.sha256}"'),
                    ("X-Linked-Size", str(len(entry.data))),
                    ("ETag", f'"{entry.oid}"'),
                    ("Content-Type", "text/plain; charset=utf-8"),
                ],
            )
        disposition = f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";"
        return serve_bytes(
            request,
            self.data.served(entry),
            etag=f'"{entry.git_sha1}"',
            headers=[*common, ("Content-Disposition", disposition)],
        )

    def cdn_location(self, entry: HubFile, name: str) -> str:
        path = f"/repos/{entry.sha256[:2]}/{entry.sha256[2:4]}/{entry.sha256}"
        expires = int(time.time()) + 3600
        query = urlencode(
            {
                "response-content-disposition": f"inline; filename*=UTF-8''{quote(name)}; "
                f'filename="{name}";',
                "Expires": str(expires),
                "Signature": sign(path, expires),
                "Key-Pair-Id": "K2LOOKALIKE",
            }
        )
        return f"{self.cdn_url}{path}?{query}"

    # -- API -------------------------------------------------------------------------------------------
    def api(self, request: Request, repo_type: str, segs: list[str]) -> Response:
        if len(segs) >= 2 and segs[1] in ("revision", "tree"):
            repo_parts, rest = segs[:1], segs[1:]
        else:
            repo_parts, rest = segs[:2], segs[2:]
        repo_id = "/".join(unquote(s) for s in repo_parts)
        new = self._alias(repo_type, repo_id)
        if new is not None:
            tail = "/".join(rest)
            kind = next(k for k, v in KINDS.items() if v == repo_type)
            location = f"/api/{kind}/{new}" + (f"/{tail}" if tail else "")
            if request.raw_target.find("?") >= 0:
                location += request.raw_target[request.raw_target.index("?") :]
            return Response(307, b"", [("Location", location)])
        repo = self._repo(request, repo_type, repo_id, for_download=False)
        if isinstance(repo, Response):
            return repo
        if not rest:
            return self.info(request, repo, "main")
        if rest[0] == "revision" and len(rest) >= 2:
            return self.info(request, repo, unquote("/".join(rest[1:])))
        if rest[0] == "tree" and len(rest) >= 2:
            return self.tree(request, repo, unquote(rest[1]), unquote("/".join(rest[2:])))
        return _error(404, None, "Not Found")

    def info(self, request: Request, repo: HubRepo, revision: str) -> Response:
        commit = repo.commit_for(revision)
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        blobs = request.param("blobs") in ("true", "1")
        siblings = []
        for path, entry in sorted(repo.commits[commit].items()):
            sib: dict[str, Any] = {"rfilename": path}
            if blobs:
                sib.update(size=len(entry.data), blobId=entry.oid)
                if entry.lfs:
                    sib["lfs"] = {
                        "sha256": entry.sha256,
                        "size": len(entry.data),
                        "pointerSize": len(entry.pointer),
                    }
            siblings.append(sib)
        return json_response(
            200,
            {
                "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": repo.repo_id.split("/")[0],
                "sha": commit,
                "private": repo.private,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "lastModified": "2024-01-01T00:00:00.000Z",
            },
        )

    def tree(self, request: Request, repo: HubRepo, revision: str, folder: str) -> Response:
        commit = repo.commit_for(revision)
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        files = repo.commits[commit]
        prefix = folder.rstrip("/") + "/" if folder else ""
        if folder and not any(p.startswith(prefix) for p in files):
            return _error(404, "EntryNotFound", f'{folder} does not exist on "{revision}"')
        recursive = request.param("recursive") in ("true", "1", "True")
        entries: list[dict[str, Any]] = []
        dirs: set[str] = set()
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            rel = path[len(prefix) :]
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                d = prefix + "/".join(parts[:depth])
                if (recursive or depth == 1) and d not in dirs:
                    dirs.add(d)
                    entries.append(
                        {
                            "type": "directory",
                            "oid": hashlib.sha1(d.encode()).hexdigest(),
                            "size": 0,
                            "path": d,
                        }
                    )
            if not recursive and len(parts) > 1:
                continue
            entry = files[path]
            item: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": len(entry.data), "path": path}
            if entry.lfs:
                item["lfs"] = {
                    "oid": entry.sha256,
                    "size": len(entry.data),
                    "pointerSize": len(entry.pointer),
                }
            entries.append(item)
        cursor = request.param("cursor")
        start = int(base64.urlsafe_b64decode(cursor.encode()).decode()) if cursor else 0
        page = entries[start : start + self.data.tree_page_size]
        headers = []
        if start + self.data.tree_page_size < len(entries):
            nxt = base64.urlsafe_b64encode(str(start + self.data.tree_page_size).encode()).decode()
            params = {k: v[0] for k, v in request.query.items() if k != "cursor"}
            params["cursor"] = nxt
            headers.append(("Link", f'<{request.base_url}{request.path}?{urlencode(params)}>; rel="next"'))
        return json_response(200, page, headers)


class RateLimitedHub(HubApp):
    """The Hub answering its API with 429 + Retry-After the first ``limit`` times (set ``limit`` any time)."""

    limit = 1

    def __call__(self, request: Request) -> Response:
        if request.path.startswith("/api/") and self.limit > 0:
            self.limit -= 1
            return Response(429, b"Too Many Requests", [("Retry-After", "1"), ("X-Error-Message", "rate limited")])
        return super().__call__(request)


class CdnApp:
    """The LFS CDN: signed URLs only, Range support, records headers (via the server)."""

    def __init__(self, data: HubData) -> None:
        self.data = data

    def __call__(self, request: Request) -> Response:
        segs = request.path.split("/")
        if len(segs) != 5 or segs[1] != "repos":
            return Response(
                404, b"<Error><Code>NoSuchKey</Code></Error>", [("Content-Type", "application/xml")]
            )
        if not signature_ok(request.path, request.param("Expires"), request.param("Signature")):
            return Response(
                403, b"<Error><Code>AccessDenied</Code></Error>", [("Content-Type", "application/xml")]
            )
        entry = self.data.blobs.get(segs[4])
        if entry is None:
            return Response(
                404, b"<Error><Code>NoSuchKey</Code></Error>", [("Content-Type", "application/xml")]
            )
        headers = []
        disposition = request.param("response-content-disposition")
        if disposition:
            headers.append(("Content-Disposition", disposition))
        return serve_bytes(request, self.data.served(entry), etag=f'"{entry.sha256}"', headers=headers)


class HubLookalike:
    """The Hub and its CDN, started together: ``with HubLookalike() as hub: hub.url, hub.cdn.records``."""

    def __init__(self, data: HubData | None = None, port: int = 0, cdn_port: int = 0) -> None:
        self.data = data or HubData.demo()
        self.cdn = LookalikeServer(CdnApp(self.data), cdn_port)
        self.app = HubApp(self.data, self.cdn.url)
        self.hub = LookalikeServer(self.app, port)

    @property
    def url(self) -> str:
        return self.hub.url

    def start(self) -> HubLookalike:
        self.cdn.start()
        self.hub.start()
        return self

    def stop(self) -> None:
        self.hub.stop()
        self.cdn.stop()

    def __enter__(self) -> HubLookalike:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.servers.lookalike.hub", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="Hub port (default: ephemeral)")
    parser.add_argument("--cdn-port", type=int, default=0, help="CDN port (default: ephemeral)")
    parser.add_argument("--data", type=Path, help="directory of repos (default: the demo repos)")
    parser.add_argument("--token", action="append", default=[], help="a token with access to everything")
    parser.add_argument(
        "--noaccess-token", action="append", default=[], help="a valid token without gated access"
    )
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="latency added to every request, Hub and CDN (default 0)"
    )
    args = parser.parse_args(argv)
    data = HubData.from_directory(args.data) if args.data else HubData.demo()
    data.full_tokens.update(args.token)
    data.noaccess_tokens.update(args.noaccess_token)
    server = HubLookalike(data, args.port, args.cdn_port)
    server.hub.delay = server.cdn.delay = args.delay_ms / 1000
    server.cdn.start()
    print(
        json.dumps(
            {"hub": server.url, "cdn": server.cdn.url, "repos": sorted(f"{t}:{r}" for t, r in data.repos)}
        ),
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        server.hub.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
