"""Where a resolved file lands: the default library layout, ``--dest`` trees, and downloads from the old layout.

Default layout (no ``--dest``), namespaced by source so that no two different files share a path:

- ``hf://``: ``<root>/hf/<owner>/<repo>/<path-in-repo>``; datasets under ``hf/datasets/``, spaces under
  ``hf/spaces/``; a repo without an owner (``gpt2``) under ``hf/_/<repo>``, so its files can never meet an
  owner's folder; a revision other than ``main`` gets its own folder ``<repo>@<rev>`` with the revision
  percent-encoded (``refs/pr/1`` -> ``refs%2Fpr%2F1``: one folder name, and two revisions never share one).
- ``civitai://``: ``<root>/civitai/<model-slug>-<modelId>/<file>``.
- plain URLs: ``<root>/<host>/<folders of the URL path>/<file>``, with a non-default port as ``<host>_<port>``
  (``127.0.0.1_8080``): ``http://h/sdxl/vae.safetensors`` and ``http://h/sd15/vae.safetensors`` are two files.

With ``--dest DIR`` an hf:// file keeps its path inside the repo (``DIR/onnx/model.onnx``), as
``hf download --local-dir`` does; other sources land directly in ``DIR``.

Every component from a server or URL goes through ``util.filenames`` (``safe_join`` sanitises each one and
refuses anything that would leave the root).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from ..resolvers.base import ResolvedFile
from ..state import FINISHED_STATUSES, MISMATCH, StateDB
from ..util.filenames import sanitize_filename, sanitize_relpath

DEFAULT_REVISION = "main"
_REPO_TYPE_FOLDER = {"dataset": "datasets", "space": "spaces"}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SLUG_MAX = 60
_URL_FOLDERS_MAX = 1024  # bytes of a URL's folders kept as folders; a longer path gets one hashed folder


def library_subdir(item: ResolvedFile, root: Path | None = None) -> str:
    """The sub-path below the download root for ``item`` in the default layout (without the file name).

    With ``root``, a plain URL whose folders meet a file already there (``http://h/llama`` was downloaded, now
    ``http://h/llama/config.json``) gets its hashed folder instead of failing with "not a directory"."""
    hints = item.hints
    if item.source == "huggingface" and hints.get("repo_id"):
        return hf_subdir(str(hints["repo_id"]), str(hints.get("repo_type") or "model"),
                         hints.get("revision"), str(hints.get("path_in_repo") or item.filename or ""))
    if item.source == "civitai":
        return posixpath.join("civitai", civitai_folder(hints.get("model_name"), hints.get("model_id"),
                                                        hints.get("version_id")))
    folders = url_subdir(item.url)
    if root is not None and _meets_a_file(root, folders):
        return url_subdir(item.url, hashed=True)
    return folders


def _meets_a_file(root: Path, subdir: str) -> bool:
    """True when a prefix of ``root/subdir`` exists and is not a folder."""
    path = root
    for part in subdir.split("/"):
        path = path / part
        if not path.exists():
            return os.path.lexists(path)  # a dangling link is in the way too
        if not path.is_dir():
            return True
    return False


def dest_subdir(item: ResolvedFile) -> str:
    """The sub-path below ``--dest`` for ``item``: an hf:// file's folder inside its repo, else nothing."""
    if item.source == "huggingface" and item.hints.get("path_in_repo"):
        return sanitize_relpath(posixpath.dirname(str(item.hints["path_in_repo"])))
    return item.subdir if item.source != "huggingface" else ""


def hf_subdir(repo_id: str, repo_type: str, revision: object, path_in_repo: str) -> str:
    """``hf/[datasets|spaces/]<owner>/<repo>[@<rev>]/<folder-in-repo>``."""
    owner, _, name = repo_id.rpartition("/")
    folder = name
    if isinstance(revision, str) and revision and revision != DEFAULT_REVISION:
        folder = f"{name}@{quote(revision, safe='')}"
    parts = ["hf", _REPO_TYPE_FOLDER.get(repo_type, ""), owner or "_", folder, posixpath.dirname(path_in_repo)]
    return sanitize_relpath("/".join(p for p in parts if p))


def civitai_folder(model_name: object, model_id: object, version_id: object) -> str:
    """``<model-slug>-<modelId>`` (just the id when the name has no letters or digits)."""
    name = model_name if isinstance(model_name, str) else ""
    slug = re.sub(r"[\W_]+", "-", name.lower()).strip("-")[:_SLUG_MAX].strip("-")
    ident = str(model_id) if isinstance(model_id, int) and model_id > 0 else f"version-{version_id}"
    return sanitize_filename(f"{slug}-{ident}" if slug else ident, fallback="civitai")


def host_folder(url: str) -> str:
    """The URL's host, lower-cased, plus ``_<port>`` for a port other than the scheme's default."""
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "unknown-host"
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme.lower()):
        host = f"{host}_{port}"
    return sanitize_filename(host, fallback="unknown-host")


def url_subdir(url: str, hashed: bool = False) -> str:
    """``<host>[_<port>]/<folders>``: the URL path's folders (without its last segment, the file name), each
    percent-decoded on its own (``%2F`` inside a segment stays inside that one folder name) and sanitised."""
    try:
        path = urlsplit(url).path
    except ValueError:
        path = ""
    segments = [unquote(s).replace("/", "%2F").replace("\\", "%5C") for s in path.rstrip("/").split("/")[:-1]]
    folders = [sanitize_filename(s, fallback="_") for s in segments if s and s not in {".", ".."}]
    if folders and (hashed or len("/".join(folders).encode()) > _URL_FOLDERS_MAX):
        # Folders that would not fit PATH_MAX, or that meet a file already there: one folder named by their hash.
        folders = ["_" + hashlib.sha256("/".join(segments).encode("utf-8", "surrogatepass")).hexdigest()[:24]]
    return posixpath.join(host_folder(url), *folders)


def previous_location(db: StateDB, display_url: str, root: Path) -> Path | None:
    """Where an earlier download of ``display_url`` lives inside ``root`` (the old, flat layout), if its file is
    still there (or its ``.part``, for one not finished): reruns find it there instead of fetching again to
    the new layout.  Nothing is moved."""
    root_text = str(root.absolute()).rstrip("/") + "/"
    for row in db.find_by_url(display_url):
        if row.url != display_url or not row.dest_path.startswith(root_text):
            continue
        path = Path(row.dest_path)
        # A damaged one (mismatch) too: the rerun repairs it where it is instead of fetching a second copy.
        if (row.status in (*FINISHED_STATUSES, MISMATCH) and path.is_file()) or row.part_path.is_file():
            return path
    return None


__all__ = ["civitai_folder", "dest_subdir", "hf_subdir", "host_folder", "library_subdir", "previous_location",
           "url_subdir"]
