"""``modfetch type``: show a file's detected artifact type and why (no unpickling, headers only)."""

from __future__ import annotations

import json
from typing import Any

import click

from ..app.place import detect_file
from ..artifacts import TYPES
from ..errors import UsageError
from .context import CliState, global_options, pass_state


@click.command("type")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--list", "list_types", is_flag=True, help="List the artifact-type vocabulary.")
@global_options
@pass_state
def command(state: CliState, files: tuple[str, ...], list_types: bool, **_: Any) -> None:
    """Show the detected artifact type of FILES and why.

    Order: a type recorded by the source (CivitAI model type; a Hugging Face file) > the content (GGUF
    header, safetensors metadata and tensor names) > the extension and name.
    """
    if list_types:
        for name, description in TYPES.items():
            click.echo(f"{name:<18}  {description}")
        return
    if not files:
        raise UsageError("no file given", hint="modfetch type FILE... (or --list)")
    for path in files:
        detection = detect_file(state.config, path)
        if state.json_output:
            click.echo(json.dumps({"path": path, "type": detection.type, "detected_by": detection.source,
                                   "reason": detection.reason, "base_model": detection.base_model}))
        else:
            click.echo(f"{path}: {detection.type}")
            click.echo(f"  why: {detection.source}: {detection.reason}")
            if detection.base_model:
                click.echo(f"  base model: {detection.base_model}")
