"""Hugging Face Hub: ``hf://`` URIs and Hub browser URLs -> files, with the Hub's own hashes.

One file: a ``HEAD`` of ``{endpoint}/{repo}/resolve/{rev}/{path}`` without following off-Hub redirects, as
``huggingface_hub`` does.  An LFS file answers ``302`` to a CDN with ``X-Linked-Etag`` (its SHA-256),
``X-Linked-Size`` and ``X-Repo-Commit``: the CDN URL is returned *without* auth headers.  A regular file
answers ``200`` with ``ETag`` = git blob SHA-1, fetched from the Hub itself with auth bound to the Hub host.

Whole repos (``hf://owner/repo?include=GLOB&exclude=GLOB``): the revision is pinned to its commit through
``/api/{type}s/{repo}/revision/{rev}``, files are listed with ``/tree/{commit}?recursive=true`` (LFS sha256,
git oid and size come with the listing) and each file is fetched from its commit-pinned resolve URL; the
engine follows the redirect itself when the file's download starts, so a signed CDN URL is never stale and
the token never leaves the Hub host.

Which words of ``hf://gpt2/README.md`` name the repo is decided with ``/api/models/{id}``, never guessed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import requests

from ..config import Config
from ..engine.http import host_of, same_origin
from ..engine.origin import scoped_auth_host
from ..errors import (
    AmbiguousChoiceError,
    AuthError,
    Candidate,
    GatedError,
    HTTPStatusError,
    NotFoundError,
    UsageError,
)
from ..util import hf_tree
from ..util.http import etag_value, header_int
from ..util.redact import redact_url
from . import hf_token, quant
from .api import SourceClient, config_retry
from .base import ResolvedFile
from .hf_listing import no_quant, unique_files
from .uris import HfUri, is_hf_browser_url, parse_hf_browser_url, parse_hf_uri

log = logging.getLogger("modfetch.resolvers.huggingface")
DEFAULT_ENDPOINT = "https://huggingface.co"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_URL_PREFIX = {"model": "", "dataset": "/datasets", "space": "/spaces"}
_API_KIND = {"model": "models", "dataset": "datasets", "space": "spaces"}
MAX_PAGES = 10_000


class HuggingFaceResolver:
    """``hf://`` URIs and huggingface.co (or configured endpoint) browser URLs."""

    name = "huggingface"

    def __init__(self, config: Config, save_trees: bool = True) -> None:
        """``save_trees=False`` (a dry run) keeps repo listings in memory: nothing is written."""
        source = config.sources.huggingface
        self.enabled = source.enabled
        self.endpoint = (os.environ.get("HF_ENDPOINT") or source.endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.token_env = source.token_env
        self.trees_dir: Path | None = config.data_root / "hf-trees" if save_trees else None
        self.timeout = config.network.timeout_seconds
        self.retry = config_retry(config)
        self.endpoint_host = urlsplit(self.endpoint).netloc.rsplit("@", 1)[-1].lower()
        # Registers the variables (and a stored token) for redaction before anything is logged; a token file
        # that cannot be read is reported by resolve(), only when the Hub is actually used.
        with contextlib.suppress(UsageError):
            hf_token.lookup(self.token_env)

    def matches(self, uri: str) -> bool:
        """True for ``hf://`` and Hub file/folder URLs on huggingface.co or the configured endpoint host."""
        return uri.strip().lower().startswith("hf://") or is_hf_browser_url(uri, [self.endpoint_host])

    def check(self, uri: str) -> HfUri:
        """The parsed URI; UsageError (without any request) when the source is off or the URI is malformed."""
        if not self.enabled:
            raise UsageError("the huggingface source is disabled in the config",
                             hint="set sources.huggingface.enabled: true to use hf:// URIs")
        return parse_hf_uri(uri) if uri.strip().lower().startswith("hf://") else parse_hf_browser_url(uri)

    def resolve(self, uri: str, session: requests.Session) -> list[ResolvedFile]:
        """The file(s) ``uri`` names; one line errors for gated/missing repos, revisions and files."""
        ref = self.check(uri)
        token = hf_token.lookup(self.token_env)
        var = token.origin
        client = SourceClient(session, self.endpoint, token.value, self.timeout, "the Hugging Face Hub",
                              self.retry)
        return _Hub(client, ref.repo_type, var, self.trees_dir).resolve(ref, uri)


class HubError(NotFoundError):
    """A Hub "not found" answer with its ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound)."""

    def __init__(self, message: str, status: int, hint: str | None = None, code: str = "") -> None:
        super().__init__(message, status, hint)
        self.code = code


def hub_error(response: requests.Response, *, repo_id: str, page: str, token_var: str | None,
              revision: str | None = None, path: str | None = None) -> HTTPStatusError:
    """A one-line error from a Hub error response, keyed on ``X-Error-Code`` (never echoing the server)."""
    status = response.status_code
    code = response.headers.get("X-Error-Code", "")
    if code == "GatedRepo":
        if token_var is None:
            return GatedError(f"{repo_id} is a gated repository and no Hugging Face token is set", status,
                             hint=f"accept the terms on the model page {page} and set HF_TOKEN")
        return GatedError(f"the token in {token_var} has no access to gated repository {repo_id}", status,
                         hint=f"accept the terms on {page} with the account that owns the token")
    if code == "RepoNotFound":
        hint = ("check the name; a private repository also needs HF_TOKEN" if token_var is None
                else f"check the name and that the account of {token_var} can see it")
        return HubError(f"repository not found on the Hub: {repo_id}", status, hint=hint, code=code)
    if code == "RevisionNotFound":
        return HubError(f"revision {revision!r} not found in {repo_id}", status,
                        hint="use an existing branch, tag or 40-hex commit (default: main)", code=code)
    if code == "EntryNotFound":
        return HubError(f"{path!r} not found in {repo_id} at revision {revision}", status,
                        hint=f"check the path; the files are listed on {page}/tree/{revision or 'main'}",
                        code=code)
    if status == 401 and token_var is not None:
        return AuthError(f"the Hub rejected the token in {token_var} (HTTP 401)", status,
                         hint="create a new token at https://huggingface.co/settings/tokens")
    if status in (401, 403):
        return AuthError(f"HTTP {status}: access denied to {repo_id}", status,
                         hint="set HF_TOKEN to a token that can read this repository")
    if status in (404, 410):
        return NotFoundError(f"HTTP {status}: not found on the Hub: {repo_id}", status)
    return HTTPStatusError(f"HTTP {status} from the Hub for {repo_id}", status)


def _match(path: str, patterns: tuple[str, ...]) -> bool:
    # As huggingface_hub's filter_repo_objects: fnmatch, and "dir/" means everything under dir.
    return any(fnmatch.fnmatch(path, p + "*" if p.endswith("/") else p) for p in patterns)


class _Hub:
    """One resolution against the Hub (one client, one repo type)."""

    def __init__(self, client: SourceClient, repo_type: str, token_var: str | None,
                 trees_dir: Path | None = None) -> None:
        self.client = client
        self.trees_dir = trees_dir
        self.repo_type = repo_type
        self.token_var = token_var
        self.prefix = _URL_PREFIX[repo_type]
        self.kind = _API_KIND[repo_type]
        self.main_commit: dict[str, tuple[str, bool]] = {}  # repo id -> (commit of main, gated), from its info

    def page(self, repo_id: str) -> str:
        return self.client.url(f"{self.prefix}/{repo_id}")

    def resolve(self, ref: HfUri, uri: str) -> list[ResolvedFile]:
        repo_id, path = self.pick_repo(ref, uri)
        revision = ref.revision or "main"
        if ref.folder or ref.filtered or not path:
            return self.list_files(repo_id, revision, path, ref.include, ref.exclude, ref)
        try:
            return [self.one_file(repo_id, revision, path)]
        except HubError as exc:
            if exc.code != "EntryNotFound":
                raise
            # ``hf://owner/repo/folder`` names a folder: download what is under it.
            try:
                return self.list_files(repo_id, revision, path, (), ())
            except (NotFoundError, UsageError):
                raise exc from None

    # -- which repo -------------------------------------------------------------------------------------
    def repo_info(self, repo_id: str) -> str | None:
        """The canonical id of ``repo_id`` (renames followed) or None when the Hub has no such repo."""
        response, data = self.client.get_json(self.client.url(f"/api/{self.kind}/{quote(repo_id)}"))
        code = response.headers.get("X-Error-Code", "")
        if code == "RepoNotFound" or (response.status_code == 404 and not code):
            return None
        if response.status_code >= 400:
            raise hub_error(response, repo_id=repo_id, page=self.page(repo_id), token_var=self.token_var)
        canonical = data.get("id") if isinstance(data, dict) else None
        canonical = canonical if isinstance(canonical, str) and canonical else repo_id
        sha = data.get("sha") if isinstance(data, dict) else None
        if isinstance(sha, str) and _SHA1.match(sha):  # the info is of main: pinning main needs no more request
            self.main_commit[canonical] = (sha, bool(data.get("gated")))
        return canonical

    def pick_repo(self, ref: HfUri, uri: str) -> tuple[str, str]:
        """``(canonical repo id, path in repo)``, asking the Hub which reading of the URI exists."""
        readings = ref.candidates()
        found = [(self.repo_info(repo), path, repo) for repo, path in readings]
        existing = [(canon, path, typed) for canon, path, typed in found if canon is not None]
        if not existing:
            hint = ("check the name; a private repository also needs HF_TOKEN" if self.token_var is None
                    else f"check the name and that the account of {self.token_var} can see it")
            names = readings[0][0] + "".join(f" (nor a single-name repository {r})" for r, _ in readings[1:])
            raise HubError(f"repository not found on the Hub: {names}", 404, hint=hint, code="RepoNotFound")
        if len(existing) > 1:
            # Browser-style URLs say where the repo id ends, so each candidate is unambiguous.
            rev = quote(ref.revision or "main", safe="")
            cands = [Candidate(f"repo {canon}, path {path or '(whole repo)'}", self.client.url(
                f"{self.prefix}/{canon}/{'resolve' if path else 'tree'}/{rev}/{quote(path)}".rstrip("/")))
                for canon, path, _ in existing]
            raise AmbiguousChoiceError(f"{redact_url(uri)!r} names two repositories", cands,
                                       hint="pass one of the listed URLs instead")
        canon, path, typed = existing[0]
        assert canon is not None
        if canon != typed or (len(readings) > 1 and typed == readings[-1][0]):
            log.info("hf: repository %s%s, path %r", typed, f" (now {canon})" if canon != typed else "", path)
        return canon, path

    # -- one file ---------------------------------------------------------------------------------------
    def resolve_url(self, repo_id: str, revision: str, path: str) -> str:
        return self.client.url(f"{self.prefix}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}")

    def one_file(self, repo_id: str, revision: str, path: str) -> ResolvedFile:
        url = self.resolve_url(repo_id, revision, path)
        response, final = self.client.send("HEAD", url)
        response.close()
        headers = response.headers
        if response.status_code >= 400:
            raise hub_error(response, repo_id=repo_id, page=self.page(repo_id), token_var=self.token_var,
                            revision=revision, path=path)
        commit = headers.get("X-Repo-Commit")
        if not commit:
            raise HTTPStatusError(f"{self.client.auth_host} sent no X-Repo-Commit for {path}: "
                                  "it does not look like a Hugging Face Hub", response.status_code,
                                  hint="check sources.huggingface.endpoint / HF_ENDPOINT")
        repo_id = self._repo_from_resolve_url(final) or repo_id
        display = redact_url(self.resolve_url(repo_id, revision, path))
        hints: dict[str, Any] = {"repo_id": repo_id, "repo_type": self.repo_type, "revision": revision,
                                 "commit": commit, "path_in_repo": path}
        location = headers.get("Location")
        if 300 <= response.status_code < 400 and location:
            target = self.client.off_host_target(final, location, response.status_code)
            linked = etag_value(headers.get("X-Linked-Etag"))
            sha256 = linked.lower() if linked and _SHA256.match(linked.lower()) else None
            etag = linked or etag_value(headers.get("ETag"))
            size = _int(headers.get("X-Linked-Size"))
            hints.update(etag=etag, lfs=sha256 is not None)
            log.debug("hf: %s is an LFS file (%s bytes, sha256 %s) served from %s", path, size, sha256,
                      urlsplit(target).netloc)
            # The CDN URL is signed: it needs and gets no auth header.
            return ResolvedFile(url=target, filename=posixpath.basename(path),
                                display_url=display, size=size, sha256=sha256, source="huggingface",
                                hints=hints)
        if response.status_code != 200:
            raise HTTPStatusError(f"unexpected HTTP {response.status_code} from the Hub for {path}",
                                  response.status_code)
        etag = etag_value(headers.get("ETag"))
        git_sha1 = etag.lower() if etag and _SHA1.match(etag.lower()) else None
        hints.update(etag=etag, lfs=False)
        pinned = self.resolve_url(repo_id, commit if _SHA1.match(commit) else revision, path)
        return ResolvedFile(url=pinned, filename=posixpath.basename(path), display_url=display,
                            headers=dict(self.client.auth),
                            auth_host=scoped_auth_host(self.client.auth_scheme, self.client.auth_host),
                            size=_int(headers.get("Content-Length")), git_sha1=git_sha1, source="huggingface",
                            hints=hints)

    def _repo_from_resolve_url(self, url: str) -> str | None:
        path = urlsplit(url).path
        base = urlsplit(self.client.endpoint).path.rstrip("/") + self.prefix + "/"
        if not path.startswith(base) or "/resolve/" not in path:
            return None
        return unquote(path[len(base):].split("/resolve/", 1)[0]) or None

    # -- listings ---------------------------------------------------------------------------------------
    def commit_of(self, repo_id: str, revision: str) -> tuple[str, bool]:
        """``(commit, gated)`` of ``revision``: the Hub shows a gated repo's info and listing to anyone."""
        if revision == "main" and repo_id in self.main_commit:
            return self.main_commit[repo_id]
        url = self.client.url(f"/api/{self.kind}/{repo_id}/revision/{quote(revision, safe='')}")
        response, data = self.client.get_json(url)
        if response.status_code >= 400:
            raise hub_error(response, repo_id=repo_id, page=self.page(repo_id), token_var=self.token_var,
                            revision=revision)
        sha = data.get("sha") if isinstance(data, dict) else None
        if not isinstance(sha, str) or not _SHA1.match(sha):
            raise HTTPStatusError(f"the Hub sent no commit for {repo_id}@{revision}", response.status_code)
        return sha, bool(data.get("gated"))

    def check_access(self, repo_id: str, commit: str, path: str) -> None:
        """Raise the gated-repo error up front (a HEAD of one file, as ``hf_hub_download`` would get) rather than
        leave every file of a gated repo to fail with an anonymous HTTP 401/403 at download time."""
        response, _ = self.client.send("HEAD", self.resolve_url(repo_id, commit, path))
        response.close()
        if response.status_code in (401, 403) or response.headers.get("X-Error-Code") == "GatedRepo":
            raise hub_error(response, repo_id=repo_id, page=self.page(repo_id), token_var=self.token_var,
                            revision=commit, path=path)

    def tree(self, repo_id: str, commit: str, revision: str, folder: str) -> list[Mapping[str, Any]]:
        suffix = f"/{quote(folder)}" if folder else ""
        url: str | None = self.client.url(f"/api/{self.kind}/{repo_id}/tree/{commit}{suffix}?recursive=true")
        entries: list[Mapping[str, Any]] = []
        seen: set[str] = set()
        while url:
            # A "next" link that points back to a page already read would loop for ever (and repeat entries).
            if url in seen or len(seen) >= MAX_PAGES:
                raise HTTPStatusError(f"the Hub's file listing for {repo_id} does not end (its page links loop)",
                                      200)
            seen.add(url)
            response, data = self.client.get_json(url)
            if response.status_code >= 400:
                raise hub_error(response, repo_id=repo_id, page=self.page(repo_id), token_var=self.token_var,
                                revision=revision, path=folder)
            if not isinstance(data, list):
                raise HTTPStatusError(f"the Hub sent an unexpected file listing for {repo_id}",
                                      response.status_code)
            entries.extend(e for e in data if isinstance(e, dict))
            nxt = response.links.get("next", {}).get("url")
            following = urljoin(url, nxt) if nxt else None
            if following is not None and not same_origin(following, url):
                # The Hub pages on itself.  A page on another host would get the listing's say over what is
                # downloaded, and a link spelling the token in its query would hand the token to that host.
                raise HTTPStatusError(f"the Hub's file listing for {repo_id} links its next page to another "
                                      f"host ({host_of(following)}); refusing to follow it", response.status_code,
                                      hint="check that the configured endpoint is the Hugging Face Hub")
            url = following
        return entries

    def list_files(self, repo_id: str, revision: str, folder: str, include: tuple[str, ...],
                   exclude: tuple[str, ...], ref: HfUri | None = None) -> list[ResolvedFile]:
        commit, gated = self.commit_of(repo_id, revision)
        files = unique_files(self.tree(repo_id, commit, revision, folder), repo_id)
        # Only a listing of the whole repo tells an offline snapshot_download what a complete snapshot is.
        tree = None if folder or self.trees_dir is None else hf_tree.save_listing(
            self.trees_dir, self.repo_type, repo_id, commit, files)
        if ref is not None and ref.quant:
            # The quantization picks the GGUF files; include= adds to them (a projector, the README).
            picked = set(quant.select((str(e["path"]) for e in files), ref.quant))
            if not picked:
                raise no_quant(ref, repo_id, revision, files)
            files = [e for e in files if e["path"] in picked or (include and _match(e["path"], include))]
        elif include:
            files = [e for e in files if _match(e["path"], include)]
        if exclude:
            files = [e for e in files if not _match(e["path"], exclude)]
        if not files:
            what = f"{repo_id}{'/' + folder if folder else ''}@{revision}"
            filters = " ".join([*(f"include={p}" for p in include), *(f"exclude={p}" for p in exclude)])
            raise UsageError(f"no files in {what}{' match ' + filters if filters else ''}",
                             hint="check the include/exclude patterns (fnmatch globs, comma-separated)")
        if gated:
            self.check_access(repo_id, commit, min(str(e["path"]) for e in files))
        repo_name = repo_id.rsplit("/", 1)[-1]
        out = []
        for entry in sorted(files, key=lambda e: str(e["path"])):
            path = str(entry["path"])
            lfs = entry.get("lfs") if isinstance(entry.get("lfs"), dict) else None
            oid = str(entry.get("oid") or "").lower()
            sha256 = str(lfs.get("oid") or lfs.get("sha256") or "").lower() if lfs else ""
            size = lfs.get("size") if lfs else entry.get("size")
            etag = sha256 if lfs else oid
            hints = {"repo_id": repo_id, "repo_type": self.repo_type, "revision": revision, "commit": commit,
                     "etag": etag or None, "path_in_repo": path, "lfs": bool(lfs)}
            if tree is not None:
                hints["hf_tree"] = str(tree)
            out.append(ResolvedFile(
                url=self.resolve_url(repo_id, commit, path), filename=posixpath.basename(path),
                display_url=redact_url(self.resolve_url(repo_id, revision, path)),
                subdir=posixpath.join(repo_name, posixpath.dirname(path)).rstrip("/"),
                headers=dict(self.client.auth),
                auth_host=scoped_auth_host(self.client.auth_scheme, self.client.auth_host),
                size=size if isinstance(size, int) else None,
                sha256=sha256 if _SHA256.match(sha256) else None,
                git_sha1=oid if not lfs and _SHA1.match(oid) else None,
                source="huggingface", hints=hints))
        log.info("hf: %s@%s (%s): %d file(s)", repo_id, revision, commit[:12], len(out))
        return out


def _int(value: str | None) -> int | None:
    return header_int(value)
