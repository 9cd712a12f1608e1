"""A CivitAI look-alike (public API v1 + download redirect) plus a separate storage host.

* ``GET /api/v1/models/{id}`` -> ``{id, name, type, nsfw, creator, modelVersions: [...]}`` (newest first);
  ``GET /api/v1/model-versions/{id}`` -> one version with ``modelId`` and ``model: {name, type, nsfw}``;
  ``GET /api/v1/model-versions/by-hash/{sha256|autov2}``.  Unknown ids: 404 ``{"error": ...}``.
* ``GET /api/download/models/{versionId}[?type=&format=&fp=&size=]`` picks a file (the primary one by
  default) and answers ``307`` to a signed URL on the storage host with
  ``Content-Disposition: attachment; filename="..."``.  Files that need a login answer 401 without a valid
  token (``Authorization: Bearer`` or ``?token=``) or, with ``login_redirect``, redirect to ``/login``.
* The storage host serves ``/file/{fileId}/{name}`` only with a valid signature, honouring ``Range``.
* A version's ``images[]`` (``url``, ``nsfwLevel`` and/or the older ``nsfw``, ``type`` image|video, ``width``,
  ``height``) point to a third host, the image host (as ``image.civitai.com``), serving ``/img/{name}`` with the
  image's own content type.

Run standalone: ``python -m tests.servers.lookalike.civitai --port 8090 --storage-port 8091 [--token T]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import signal
import sys
import time
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from . import (
    LookalikeServer,
    Request,
    Response,
    json_response,
    pseudo_random_bytes,
    serve_bytes,
    sign,
    signature_ok,
)

GOOD_TOKEN = "civitai_LookalikeToken_0123456789abcdef"


@dataclass
class CivFile:
    id: int
    name: str
    data: bytes
    type: str = "Model"
    format: str = "SafeTensor"
    fp: str | None = "fp16"
    size: str | None = "pruned"
    primary: bool = False
    auth: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class CivImage:
    """A gallery image: ``nsfw_level`` (newer answers) and/or ``nsfw`` (older: bool or a level string)."""

    name: str
    data: bytes
    content_type: str = "image/png"
    nsfw_level: int | None = 1
    nsfw: Any = None
    type: str = "image"
    url: str | None = None  # served from the image host unless set


@dataclass
class CivVersion:
    id: int
    name: str
    base_model: str
    files: list[CivFile] = field(default_factory=list)
    images: list[CivImage] = field(default_factory=list)
    trained_words: list[str] = field(default_factory=list)


@dataclass
class CivModel:
    id: int
    name: str
    type: str
    creator: str
    versions: list[CivVersion] = field(default_factory=list)  # newest first
    nsfw: bool = False


class CivitaiData:
    def __init__(self) -> None:
        self.models: dict[int, CivModel] = {}
        self.tokens: set[str] = {GOOD_TOKEN}
        self.login_redirect = False

    def add(self, model: CivModel) -> CivModel:
        self.models[model.id] = model
        return model

    def version(self, version_id: int) -> tuple[CivModel, CivVersion] | None:
        for model in self.models.values():
            for version in model.versions:
                if version.id == version_id:
                    return model, version
        return None

    def file(self, file_id: int) -> CivFile | None:
        for model in self.models.values():
            for version in model.versions:
                for f in version.files:
                    if f.id == file_id:
                        return f
        return None

    @classmethod
    def demo(cls) -> CivitaiData:
        data = cls()
        data.add(
            CivModel(
                4201,
                "Realistic Vision",
                "Checkpoint",
                "SG_161222",
                versions=[
                    CivVersion(
                        130072,
                        "V6.0 B1",
                        "SD 1.5",
                        [
                            CivFile(
                                1001,
                                "realisticVision_v60B1.safetensors",
                                pseudo_random_bytes("rv60-st", 400_000),
                                primary=True,
                            ),
                            CivFile(
                                1002,
                                "realisticVision_v60B1.ckpt",
                                pseudo_random_bytes("rv60-ckpt", 90_000),
                                format="PickleTensor",
                            ),
                            CivFile(
                                1003,
                                "realisticVision_v60B1_fp32.safetensors",
                                pseudo_random_bytes("rv60-fp32", 80_000),
                                fp="fp32",
                                size="full",
                            ),
                            CivFile(
                                1004,
                                "realisticVision_v60B1_vae.safetensors",
                                pseudo_random_bytes("rv60-vae", 20_000),
                                type="VAE",
                                fp=None,
                                size=None,
                            ),
                        ],
                    ),
                    CivVersion(
                        125000,
                        "V5.1",
                        "SD 1.5",
                        [
                            CivFile(
                                901,
                                "realisticVision_v51.safetensors",
                                pseudo_random_bytes("rv51", 60_000),
                                primary=True,
                            ),
                        ],
                    ),
                ],
            )
        )
        data.add(
            CivModel(
                5500,
                "Detail Tweaker",
                "LORA",
                "lora_maker",
                versions=[
                    CivVersion(
                        62833,
                        "v1.0",
                        "SDXL 1.0",
                        [
                            CivFile(
                                2001,
                                "detail_tweaker.safetensors",
                                pseudo_random_bytes("lora", 30_000),
                                primary=True,
                                auth=True,
                            ),
                        ],
                    ),
                ],
            )
        )
        # A primary pickle with a SafeTensor twin: the twin should be preferred.
        data.add(
            CivModel(
                6600,
                "Old Embedding",
                "TextualInversion",
                "emb_person",
                versions=[
                    CivVersion(
                        66001,
                        "v1",
                        "SD 1.5",
                        [
                            CivFile(
                                3001,
                                "old_embedding.pt",
                                pseudo_random_bytes("emb-pt", 5_000),
                                format="PickleTensor",
                                primary=True,
                                fp=None,
                                size=None,
                            ),
                            CivFile(
                                3002,
                                "old_embedding.safetensors",
                                pseudo_random_bytes("emb-st", 5_000),
                                fp=None,
                                size=None,
                            ),
                        ],
                    ),
                ],
            )
        )
        # A hostile file name: must land inside --dest.
        data.add(
            CivModel(
                7700,
                "Sneaky",
                "Upscaler",
                "mallory",
                versions=[
                    CivVersion(
                        77001,
                        "v1",
                        "Other",
                        [
                            CivFile(
                                4001,
                                "../../evil.pth",
                                pseudo_random_bytes("evil", 3_000),
                                format="PickleTensor",
                                primary=True,
                                fp=None,
                                size=None,
                            ),
                        ],
                    ),
                ],
            )
        )
        return data


def _hashes(f: CivFile) -> dict[str, str]:
    sha = f.sha256.upper()
    return {
        "AutoV1": sha[:8],
        "AutoV2": sha[:10],
        "SHA256": sha,
        "CRC32": f"{zlib.crc32(f.data):08X}",
        "BLAKE3": hashlib.blake2s(f.data).hexdigest().upper(),
    }


class CivitaiApp:
    def __init__(self, data: CivitaiData, storage_url: str, image_url: str = "") -> None:
        self.data = data
        self.storage_url = storage_url.rstrip("/")
        self.image_url = image_url.rstrip("/")

    def _image_json(self, image: CivImage) -> dict[str, Any]:
        out: dict[str, Any] = {"url": image.url or f"{self.image_url}/img/{image.name}", "type": image.type,
                               "width": 512, "height": 768, "hash": "U00000fQfQfQ", "meta": None}
        if image.nsfw_level is not None:
            out["nsfwLevel"] = image.nsfw_level
        if image.nsfw is not None:
            out["nsfw"] = image.nsfw
        return out

    def _file_json(self, base: str, version: CivVersion, f: CivFile) -> dict[str, Any]:
        params = (
            {}
            if f.primary
            else {
                k: v for k, v in (("type", f.type), ("format", f.format), ("size", f.size), ("fp", f.fp)) if v
            }
        )
        url = f"{base}/api/download/models/{version.id}" + (f"?{urlencode(params)}" if params else "")
        return {
            "id": f.id,
            "name": f.name,
            "sizeKB": len(f.data) / 1024,
            "type": f.type,
            "primary": f.primary or None,
            "metadata": {"format": f.format, "fp": f.fp, "size": f.size},
            "hashes": _hashes(f),
            "downloadUrl": url,
            "pickleScanResult": "Success",
            "virusScanResult": "Success",
        }

    def _version_json(self, base: str, model: CivModel, version: CivVersion, nested: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": version.id,
            "modelId": model.id,
            "name": version.name,
            "baseModel": version.base_model,
            "downloadUrl": f"{base}/api/download/models/{version.id}",
            "trainedWords": list(version.trained_words),
            "images": [self._image_json(i) for i in version.images],
            "files": [self._file_json(base, version, f) for f in version.files],
        }
        if not nested:
            out["model"] = {"name": model.name, "type": model.type, "nsfw": model.nsfw, "poi": False}
        return out

    def __call__(self, request: Request) -> Response:
        segs = [s for s in request.path.split("/") if s]
        base = request.base_url
        if segs[:3] == ["api", "v1", "models"] and len(segs) == 4:
            model = self.data.models.get(int(segs[3])) if segs[3].isdigit() else None
            if model is None:
                return json_response(404, {"error": f"No model with id {segs[3]}"})
            return json_response(
                200,
                {
                    "id": model.id,
                    "name": model.name,
                    "type": model.type,
                    "nsfw": model.nsfw,
                    "poi": False,
                    "creator": {"username": model.creator, "image": None},
                    "tags": [],
                    "description": "",
                    "modelVersions": [self._version_json(base, model, v, True) for v in model.versions],
                },
            )
        if segs[:3] == ["api", "v1", "model-versions"] and len(segs) == 5 and segs[3] == "by-hash":
            wanted = segs[4].upper()
            for model in self.data.models.values():
                for version in model.versions:
                    if any(wanted in (f.sha256.upper(), f.sha256.upper()[:10]) for f in version.files):
                        return json_response(200, self._version_json(base, model, version, False))
            return json_response(404, {"error": "Model not found"})
        if segs[:3] == ["api", "v1", "model-versions"] and len(segs) == 4:
            found = self.data.version(int(segs[3])) if segs[3].isdigit() else None
            if found is None:
                return json_response(404, {"error": f"Version not found: {segs[3]}"})
            return json_response(200, self._version_json(base, found[0], found[1], False))
        if segs[:3] == ["api", "download", "models"] and len(segs) == 4:
            return self.download(request, segs[3])
        if segs and segs[0] == "login":
            return Response(200, b"<html>Sign in to CivitAI</html>", [("Content-Type", "text/html")])
        return json_response(404, {"error": "Not found"})

    def download(self, request: Request, raw_id: str) -> Response:
        found = self.data.version(int(raw_id)) if raw_id.isdigit() else None
        if found is None:
            return json_response(404, {"error": "Model not found"})
        _, version = found
        files = version.files
        for key in ("type", "format", "fp", "size"):
            wanted = request.param(key)
            if wanted:
                files = [f for f in files if (getattr(f, key) or "").lower() == wanted.lower()]
        if not any(request.param(k) for k in ("type", "format", "fp", "size")):
            files = [f for f in files if f.primary] or files[:1]
        if not files:
            return json_response(404, {"error": "File not found"})
        f = files[0]
        token = request.bearer or request.param("token")
        if f.auth and token not in self.data.tokens:
            if self.data.login_redirect and not token:
                return Response(307, b"", [("Location", f"/login?returnUrl=/api/download/models/{raw_id}")])
            return json_response(
                401,
                {
                    "error": "Unauthorized",
                    "message": "The creator of this asset requires you to be logged in to download it",
                },
            )
        path = f"/file/{f.id}/{quote(f.name.rsplit('/', 1)[-1])}"
        expires = int(time.time()) + 3600
        disposition = f'attachment; filename="{f.name}"'
        query = urlencode(
            {
                "X-Amz-Expires": "3600",
                "X-Amz-Date": str(expires),
                "X-Amz-Signature": sign(path, expires),
                "response-content-disposition": disposition,
            }
        )
        return Response(
            307,
            b"",
            [("Location", f"{self.storage_url}{path}?{query}"), ("Content-Disposition", disposition)],
        )


class StorageApp:
    def __init__(self, data: CivitaiData) -> None:
        self.data = data

    def __call__(self, request: Request) -> Response:
        segs = request.path.split("/")
        if len(segs) != 4 or segs[1] != "file" or not segs[2].isdigit():
            return Response(404, b"NoSuchKey")
        if not signature_ok(request.path, request.param("X-Amz-Date"), request.param("X-Amz-Signature")):
            return Response(
                403, b"<Error><Code>AccessDenied</Code></Error>", [("Content-Type", "application/xml")]
            )
        f = self.data.file(int(segs[2]))
        if f is None:
            return Response(404, b"NoSuchKey")
        disposition = request.param("response-content-disposition") or f'attachment; filename="{f.name}"'
        return serve_bytes(
            request, f.data, etag=f'"{f.sha256[:32]}"', headers=[("Content-Disposition", disposition)]
        )


class ImageApp:
    """The image host: ``/img/{name}`` with the image's content type (no auth, like a public CDN)."""

    def __init__(self, data: CivitaiData) -> None:
        self.data = data

    def __call__(self, request: Request) -> Response:
        name = request.path.rsplit("/", 1)[-1]
        for model in self.data.models.values():
            for version in model.versions:
                for image in version.images:
                    if request.path == f"/img/{name}" and image.name == name:
                        return Response(200, image.data, [("Content-Type", image.content_type)])
        return Response(404, b"NoSuchKey")


class CivitaiLookalike:
    """The API, its storage host and its image host: ``with CivitaiLookalike() as c: c.url, c.storage.records,
    c.images.records``."""

    def __init__(self, data: CivitaiData | None = None, port: int = 0, storage_port: int = 0) -> None:
        self.data = data or CivitaiData.demo()
        self.storage = LookalikeServer(StorageApp(self.data), storage_port)
        self.images = LookalikeServer(ImageApp(self.data))
        self.api = LookalikeServer(CivitaiApp(self.data, self.storage.url, self.images.url), port)

    @property
    def url(self) -> str:
        return self.api.url

    def start(self) -> CivitaiLookalike:
        self.storage.start()
        self.images.start()
        self.api.start()
        return self

    def stop(self) -> None:
        self.api.stop()
        self.images.stop()
        self.storage.stop()

    def __enter__(self) -> CivitaiLookalike:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.servers.lookalike.civitai", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="API port (default: ephemeral)")
    parser.add_argument("--storage-port", type=int, default=0, help="storage port (default: ephemeral)")
    parser.add_argument("--token", action="append", default=[], help="an extra valid API token")
    parser.add_argument("--login-redirect", action="store_true", help="redirect to /login instead of 401")
    args = parser.parse_args(argv)
    data = CivitaiData.demo()
    data.tokens.update(args.token)
    data.login_redirect = args.login_redirect
    server = CivitaiLookalike(data, args.port, args.storage_port)
    server.storage.start()
    server.images.start()
    print(
        json.dumps({"api": server.url, "storage": server.storage.url, "models": sorted(data.models)}),
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        server.api.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
