"""Ollama: write a Modelfile beside the GGUF and build (optionally run) ``ollama create``.

Ollama's own blob store is never touched: at start-up Ollama deletes blobs no manifest references and any
file there not named ``sha256-<hex>``.  ``ollama create NAME -f Modelfile`` imports through Ollama itself.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from ..errors import DiskError, TargetExistsError
from ..util.atomic import temp_sibling
from .linker import CREATED, REPAIRED, REPLACED, SKIPPED, LinkResult, SourceFile


def modelfile_text(source: SourceFile) -> str:
    """The Modelfile: ``FROM`` the absolute path of the GGUF."""
    return f"FROM {source.path}\n"


def create_command(model: str, modelfile: Path) -> list[str]:
    """The ``ollama create`` argv."""
    return ["ollama", "create", model, "-f", str(modelfile)]


def modelfile_state(source: SourceFile, target: Path) -> str:
    """What is at ``target`` now: ``absent``, ``same`` (this Modelfile), ``dangling`` (a broken link),
    ``directory`` or ``different`` — the vocabulary of ``linker.inspect_target``, so a dry run can tell."""
    if not os.path.lexists(target):
        return "absent"
    if target.is_symlink():
        return "different" if target.exists() else "dangling"
    if target.is_dir():
        return "directory"
    text = modelfile_text(source)
    if (target.is_file() and target.stat().st_size == len(text.encode())  # (never read a big file whole)
            and target.read_text(encoding="utf-8", errors="replace") == text):
        return "same"
    return "different"


def write_modelfile(source: SourceFile, target: Path, force: bool = False) -> LinkResult:
    """Write the Modelfile at ``target`` (skip when identical; replace a different one only with force)."""
    text = modelfile_text(source)
    action = CREATED
    state = modelfile_state(source, target)
    if state != "absent":
        if state == "same":
            return LinkResult(SKIPPED, "modelfile", "Modelfile already up to date")
        if state == "dangling":
            action = REPAIRED
        elif not force:
            raise TargetExistsError(f"{target} already exists with different content",
                                    hint="pass --force to replace it")
        else:
            action = REPLACED
    temp = temp_sibling(target)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        if action == CREATED:
            os.link(temp, target)
            os.unlink(temp)
        else:
            os.replace(temp, target)
    except FileExistsError:
        os.unlink(temp)
        if modelfile_state(source, target) == "same":  # another process wrote the same Modelfile meanwhile
            return LinkResult(SKIPPED, "modelfile", "Modelfile already up to date")
        raise TargetExistsError(f"{target} appeared while writing; not overwriting it") from None
    except OSError as exc:
        if os.path.lexists(temp):
            os.unlink(temp)
        raise DiskError(f"cannot write {target}: {exc.strerror or exc}") from None
    return LinkResult(action, "modelfile", "")


def run_create(argv: list[str], timeout: float = 3600.0) -> tuple[bool, str]:
    """Run ``ollama create`` when the binary is on PATH: (ok, message)."""
    binary = shutil.which(argv[0])
    if binary is None:
        return False, f"ollama is not on PATH; run the command yourself: {shlex.join(argv)}"
    try:
        proc = subprocess.run([binary, *argv[1:]], capture_output=True, text=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"ollama create failed: {exc}"
    output = (proc.stdout + proc.stderr).strip().splitlines()
    tail = output[-1] if output else ""
    if proc.returncode != 0:
        return False, f"ollama create exited {proc.returncode}: {tail}"
    return True, f"ollama create succeeded{': ' + tail if tail else ''}"
