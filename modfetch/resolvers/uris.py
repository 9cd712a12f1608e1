"""Pure parsing of the URIs the Hugging Face and CivitAI resolvers accept (no I/O; fuzzable).

``hf://[datasets/|spaces/]owner/repo[@REV][:QUANT][/path]?rev=REV&include=GLOB&exclude=GLOB`` and Hub browser URLs
(``https://huggingface.co/owner/repo/blob|resolve|tree/REV/path``);
``civitai://model/ID?version=V&file=SUBSTR&format=F&fp=P&size=S&type=T``, ``civitai://version/V`` and
CivitAI browser / download URLs.  Every parser returns a frozen dataclass or raises ``UsageError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from ..errors import UsageError
from ..util.redact import redact_url

HF_HOSTS = frozenset({"huggingface.co", "www.huggingface.co", "hf.co"})
CIVITAI_HOSTS = frozenset({"civitai.com", "www.civitai.com", "civitai.green", "www.civitai.green"})
REPO_TYPES = {"datasets": "dataset", "spaces": "space", "models": "model"}
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\s]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BROWSER_MARKERS = ("blob", "resolve", "tree")
_HF_PARAMS = {"rev", "revision", "include", "exclude"}
# The repo name part of an hf:// URI: ``name``, ``name@REV`` (as HfFileSystem; a '/' in REV percent-encoded),
# ``name:QUANT`` or ``name@REV:QUANT``.  Git refs cannot contain ':' (git check-ref-format), so the last ':'
# always starts the quantization.
_REPO_REF = re.compile(r"^(?P<name>[^@:]*)(?:@(?P<rev>[^:]*))?(?::(?P<quant>[^@:]*))?$")
_QUANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
_CIVITAI_FILTERS = ("file", "format", "fp", "size", "type")


@dataclass(frozen=True)
class HfUri:
    """A parsed Hugging Face reference.

    ``parts`` are the path components after the repo type as typed.  When ``split`` is set the URI itself says
    how many leading parts form the repo id (browser URLs); otherwise the resolver decides with the Hub API
    (``hf://gpt2/README.md``: repo ``gpt2``, or repo ``gpt2/README.md``?).  ``folder`` marks a browser
    ``/tree/`` URL (a folder, not a file).
    """

    repo_type: str
    parts: tuple[str, ...]
    revision: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    split: int | None = None
    folder: bool = False
    quant: str | None = None

    def candidates(self) -> list[tuple[str, str]]:
        """``(repo_id, path_in_repo)`` readings of ``parts``, most likely first (owner/name before legacy)."""
        if self.split is not None:
            return [("/".join(self.parts[: self.split]), "/".join(self.parts[self.split:]))]
        if len(self.parts) == 1:
            return [(self.parts[0], "")]
        two = ("/".join(self.parts[:2]), "/".join(self.parts[2:]))
        one = (self.parts[0], "/".join(self.parts[1:]))
        return [two, one]

    @property
    def filtered(self) -> bool:
        """True when include/exclude globs or a quantization were given (a listing, not a single file)."""
        return bool(self.include or self.exclude or self.quant)


@dataclass(frozen=True)
class CivitaiUri:
    """A parsed CivitAI reference: a model (latest or ``version_id``) or a version alone, plus filters."""

    model_id: int | None
    version_id: int | None = None
    file: str | None = None
    format: str | None = None
    fp: str | None = None
    size: str | None = None
    type: str | None = None

    def __post_init__(self) -> None:
        if self.model_id is None and self.version_id is None:
            raise UsageError("a CivitAI URI needs a model id or a version id")


def _show(uri: str) -> str:
    """A URI fit for a one-line message: redacted and repr-quoted (control characters escaped)."""
    return repr(redact_url(uri))


def _host(netloc: str) -> str:
    return netloc.rsplit("@", 1)[-1].lower()


def _split_globs(values: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        out.extend(p.strip() for p in value.split(",") if p.strip())
    return tuple(out)


def _check_revision(rev: str, uri: str) -> str:
    if not rev or _BAD_CHARS.search(rev) or rev.startswith("/") or ".." in rev.split("/"):
        raise UsageError(f"invalid revision {rev!r} in {_show(uri)}",
                         hint="use a branch, tag or 40-hex commit, e.g. ?rev=main")
    return rev


def _check_parts(parts: list[str], uri: str) -> tuple[str, ...]:
    for part in parts:
        # A percent-encoded slash (``x%2F..%2Fy``) must not smuggle an empty or dot segment into the path.
        if any(seg in ("", ".", "..") for seg in part.split("/")) or _CONTROL.search(part) or "\\" in part \
                or part != part.strip():
            raise UsageError(f"invalid path component {part!r} in {_show(uri)}")
    return tuple(parts)


def _check_repo_parts(parts: tuple[str, ...], count: int, uri: str) -> None:
    for part in parts[:count]:
        if not _REPO_PART.match(part):
            raise UsageError(f"invalid repository name {part!r} in {_show(uri)}",
                             hint="repo names use letters, digits, '-', '_' and '.'")


def _query(query: str, allowed: set[str], uri: str) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise UsageError(f"unknown query parameter {key!r} in {_show(uri)}",
                             hint=f"known parameters: {', '.join(sorted(allowed))}")
        params.setdefault(key, []).append(value)
    return params


def _repo_ref(raw: list[str], uri: str) -> tuple[int | None, str | None, str | None]:
    """Take ``@REV`` and ``:QUANT`` off the repo name in ``raw`` (in place): ``(split, revision, quant)``.

    Only the first two parts can name the repo (``owner/name`` or a legacy ``name``); a ':' or '@' further on
    belongs to a file path.  A revision or quantization there also fixes where the repo id ends."""
    for index in range(min(2, len(raw))):
        match = _REPO_REF.match(raw[index]) if ("@" in raw[index] or ":" in raw[index]) else None
        if match is None:
            continue
        if index == 0 and len(raw) > 1 and match.group("rev") is None:
            continue  # ``owner:x/...`` is no repo reference: the owner check reports it
        quant = match.group("quant")
        if quant is not None and not _QUANT.match(quant):
            raise UsageError(f"invalid quantization {quant!r} in {_show(uri)}",
                             hint="e.g. hf://owner/repo:Q4_K_M (letters, digits, '_' and '-')")
        if quant is not None and len(raw) > index + 1:
            raise UsageError(f"a :{quant} quantization picks files of a whole repo; no path may follow it in "
                             f"{_show(uri)}", hint="drop the path, or drop the :QUANT and name the file")
        raw[index] = match.group("name")
        rev = match.group("rev")
        return index + 1, (None if rev is None else rev), quant
    return None, None, None


def parse_hf_uri(uri: str) -> HfUri:
    """Parse ``hf://[datasets/|spaces/|models/]owner/repo[@REV][:QUANT][/path][?rev=&include=&exclude=]``."""
    text = uri.strip()
    if not text.lower().startswith("hf://"):
        raise UsageError(f"not an hf:// URI: {_show(text)}")
    rest = text[5:]
    path, _, query = rest.partition("?")
    path = path.split("#", 1)[0]
    params = _query(query, _HF_PARAMS, text)
    segments = [p for p in path.split("/") if p]
    repo_type = "model"
    if segments and unquote(segments[0]) in REPO_TYPES:
        repo_type = REPO_TYPES[unquote(segments[0])]
        segments = segments[1:]
    # ``@REV`` is split off before percent-decoding: ``repo@refs%2Fpr%2F1/file`` keeps its slashes in REV.
    split, at_rev, quant = _repo_ref(segments, text)
    raw = [unquote(p) for p in segments]
    if not raw or not raw[0]:
        raise UsageError(f"no repository in {_show(text)}", hint="expected hf://owner/repo/path/in/repo")
    parts = _check_parts(raw, text)
    _check_repo_parts(parts, split or 2, text)
    revs = params.get("rev", []) + params.get("revision", []) + ([at_rev] if at_rev is not None else [])
    if len(revs) > 1:
        raise UsageError(f"more than one revision in {_show(text)}", hint="use either @REV or ?rev=REV")
    revision = _check_revision(unquote(revs[0]).strip(), text) if revs else None
    return HfUri(repo_type, parts, revision, _split_globs(params.get("include", [])),
                 _split_globs(params.get("exclude", [])), split=split, quant=quant.upper() if quant else None)


def _web_path_segments(uri: str, hosts: Iterable[str], extra_hosts: Iterable[str]) -> list[str] | None:
    """The non-empty path segments of an http(s) URL on one of ``hosts``/``extra_hosts``, else None."""
    try:
        parts = urlsplit(uri.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https"):
        return None
    if _host(parts.netloc) not in {*hosts, *(h.lower() for h in extra_hosts)}:
        return None
    return [s for s in parts.path.split("/") if s]


def is_hf_browser_url(uri: str, extra_hosts: Iterable[str] = ()) -> bool:
    """True for a Hub web URL (``/owner/repo/blob|resolve|tree/REV/...``) on the Hub or ``extra_hosts``."""
    segs = _web_path_segments(uri, HF_HOSTS, extra_hosts)
    if segs is None:
        return False
    if segs and segs[0] in REPO_TYPES:
        segs = segs[1:]
    return any(len(segs) > i + 1 and segs[i] in _BROWSER_MARKERS for i in (1, 2))


def _split_browser_url(uri: str) -> tuple[str, SplitResult, list[str]]:
    """``(stripped text, urlsplit parts, non-empty path segments)`` of a pasted browser URL."""
    text = uri.strip()
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise UsageError(f"invalid URL {_show(text)}: {exc}") from None
    return text, parts, [s for s in parts.path.split("/") if s]


def parse_hf_browser_url(uri: str) -> HfUri:
    """Parse ``https://host/[datasets/]owner/repo/(blob|resolve|tree)/REV[/path]`` (REV percent-decoded)."""
    text, _, segs = _split_browser_url(uri)
    repo_type = "model"
    if segs and segs[0] in REPO_TYPES:
        repo_type = REPO_TYPES[segs[0]]
        segs = segs[1:]
    # Legacy single-name repos: /gpt2/resolve/main/x; owner/name: /owner/name/resolve/main/x.
    marker = next((i for i in (2, 1) if len(segs) > i + 1 and segs[i] in _BROWSER_MARKERS), None)
    if marker is None:
        raise UsageError(f"not a Hugging Face file URL: {_show(text)}",
                         hint="expected https://huggingface.co/owner/repo/blob/REV/path")
    repo = [unquote(s) for s in segs[:marker]]
    revision = _check_revision(unquote(segs[marker + 1]), text)
    path = [unquote(s) for s in segs[marker + 2:]]
    all_parts = _check_parts(repo + path, text)
    _check_repo_parts(all_parts, marker, text)
    folder = segs[marker] == "tree"
    if not folder and not path:
        raise UsageError(f"no file in {_show(text)}", hint="expected .../blob/REV/path/to/file")
    return HfUri(repo_type, all_parts, revision, split=marker, folder=folder)


def _civitai_id(value: str, what: str, uri: str) -> int:
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 12 or int(value) == 0:  # not '²'
        raise UsageError(f"invalid CivitAI {what} id {value!r} in {_show(uri)}",
                         hint="ids are positive numbers, e.g. civitai://model/4201?version=130072")
    return int(value)


def _civitai_filters(params: dict[str, list[str]], uri: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key in _CIVITAI_FILTERS:
        values = params.get(key, [])
        if len(values) > 1:
            raise UsageError(f"{key}= given more than once in {_show(uri)}")
        value = values[0].strip() if values else None
        if value is not None and (not value or _CONTROL.search(value)):
            raise UsageError(f"invalid {key}= value {value!r} in {_show(uri)}")
        out[key] = value
    return out


def parse_civitai_uri(uri: str) -> CivitaiUri:
    """Parse ``civitai://model/ID[/slug][?version=V&file=..&format=..&fp=..&size=..&type=..]`` or
    ``civitai://version/V[?...]``."""
    text = uri.strip()
    if not text.lower().startswith("civitai://"):
        raise UsageError(f"not a civitai:// URI: {_show(text)}")
    path, _, query = text[len("civitai://"):].partition("?")
    segs = [unquote(s) for s in path.split("#", 1)[0].split("/") if s]
    params = _query(query, {"version", "modelVersionId", *_CIVITAI_FILTERS}, text)
    filters = _civitai_filters(params, text)
    versions = params.get("version", []) + params.get("modelVersionId", [])
    if len(versions) > 1:
        raise UsageError(f"more than one version in {_show(text)}")
    if len(segs) >= 2 and segs[0] in ("model", "models") and len(segs) <= 3:
        model_id = _civitai_id(segs[1], "model", text)
        version_id = _civitai_id(versions[0], "version", text) if versions else None
        return CivitaiUri(model_id, version_id, **filters)
    if len(segs) == 2 and segs[0] in ("version", "model-version", "model-versions"):
        if versions:
            raise UsageError(f"version given twice in {_show(text)}")
        return CivitaiUri(None, _civitai_id(segs[1], "version", text), **filters)
    raise UsageError(f"invalid CivitAI URI {_show(text)}",
                     hint="expected civitai://model/ID[?version=V&file=NAME] or civitai://version/V")


def is_civitai_browser_url(uri: str, extra_hosts: Iterable[str] = ()) -> bool:
    """True for ``https://civitai.com/models/ID...`` or ``.../api/download/models/V`` (or ``extra_hosts``)."""
    segs = _web_path_segments(uri, CIVITAI_HOSTS, extra_hosts)
    if segs is None:
        return False
    return (len(segs) >= 2 and segs[0] == "models") or segs[:3] == ["api", "download", "models"]


def parse_civitai_browser_url(uri: str) -> CivitaiUri:
    """Parse ``https://civitai.com/models/ID[/slug][?modelVersionId=V]`` or
    ``https://civitai.com/api/download/models/V[?type=&format=&fp=&size=]``."""
    text, parts, segs = _split_browser_url(uri)
    # Browser URLs carry tracking and UI parameters; keep only those that mean something here.
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k in {"modelVersionId", "version", *_CIVITAI_FILTERS}]
    params: dict[str, list[str]] = {}
    for key, value in pairs:
        params.setdefault(key, []).append(value)
    filters = _civitai_filters(params, text)
    versions = params.get("modelVersionId", []) + params.get("version", [])
    if segs[:3] == ["api", "download", "models"] and len(segs) == 4:
        return CivitaiUri(None, _civitai_id(segs[3], "version", text), **filters)
    if len(segs) >= 2 and segs[0] == "models":
        model_id = _civitai_id(segs[1], "model", text)
        version_id = _civitai_id(versions[0], "version", text) if versions else None
        return CivitaiUri(model_id, version_id, **filters)
    raise UsageError(f"not a CivitAI model URL: {_show(text)}",
                     hint="expected https://civitai.com/models/ID[?modelVersionId=V]")
