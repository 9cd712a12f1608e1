"""``modfetch download``: fetch URLs (http(s)://, hf://, civitai://), verify, and print path + SHA-256."""

from __future__ import annotations

import click

from ..app.download import DownloadOptions, download_uri, validate_sha256
from ..artifacts import TYPES
from ..errors import UsageError
from ..metrics import checkpoint_writer
from ..paths import expand_path
from ..util.filenames import check_plain_filename
from ..util.sizes import parse_size
from .context import CliState, global_options, pass_state
from .progress import progress_factory


@click.command("download")
@click.argument("urls", nargs=-1)
@click.option("--url", "url_options", multiple=True, help="URL or URI to fetch (repeatable).")
@click.option("--dest", type=click.Path(file_okay=False), help="Destination directory (default: download_root).")
@click.option("--out", help="File name to save as (single file only).")
@click.option("--sha256", "sha256", help="Expected SHA-256; the download fails if the bytes differ.")
@click.option("--force", is_flag=True, help="Replace an existing different file at the target.")
@click.option("--concurrency", type=click.IntRange(1, 64), help="Connections per file (default: per_file_chunks).")
@click.option("--chunk-size", help="Chunk size, e.g. 16M (default: chunk_size_mb).")
@click.option("--pick", is_flag=True,
              help="On a terminal, choose from a menu when a URI matches several files or versions.")
@click.option("--place", is_flag=True, help="Place each verified file into the configured apps.")
@click.option("--metadata/--no-metadata", default=None,
              help="CivitAI: write <stem>.civitai.info and <stem>.preview.<ext> beside the file and its "
                   "placements (default: general.metadata).")
@click.option("--type", "artifact_type", type=click.Choice(list(TYPES)),
              help="Artifact type for placement (skips detection).")
@click.option("--batch", "batch_file", type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="Run the jobs of a batch YAML file ('-': standard input; see docs/PLACEMENT.md).")
@global_options
@pass_state
def command(state: CliState, urls: tuple[str, ...], url_options: tuple[str, ...], dest: str | None,
            out: str | None, sha256: str | None, force: bool, concurrency: int | None, chunk_size: str | None,
            pick: bool, place: bool, metadata: bool | None, artifact_type: str | None,
            batch_file: str | None) -> None:
    """Download files, verify their SHA-256 and print each final path and hash.

    Reruns resume from where the last run stopped; a file already present and verified is not fetched
    again.  URIs: http(s)://..., hf://owner/repo/path[?rev=REV], civitai://model/ID[?version=V].
    """
    # Placement, batch and picker code is imported only when asked for: a plain download starts faster.
    targets = [*url_options, *urls]
    if batch_file:
        from .place import run_batch_cli

        if targets:
            raise UsageError("--batch cannot be combined with URLs",
                             hint="add them as jobs to the batch file")
        # Per-file options would otherwise be dropped without a word: each job carries its own.
        ignored = [flag for flag, value in (("--dest", dest), ("--out", out), ("--sha256", sha256),
                                            ("--pick", pick)) if value]
        if ignored:
            raise UsageError(f"{', '.join(ignored)} cannot be combined with --batch",
                             hint="set a job's dest, name or sha256 in the batch file (see docs/PLACEMENT.md)")
        return run_batch_cli(state, batch_file, place=place, artifact_type=artifact_type,
                             force=force, concurrency=concurrency, metadata=metadata,
                             chunk_size=parse_size(chunk_size) if chunk_size is not None else None)
    if not targets:
        raise UsageError("nothing to download", hint="pass a URL: modfetch download --url https://host/file")
    config = state.config
    options = DownloadOptions(
        dest=expand_path(dest) if dest else None,
        out=out,
        sha256=validate_sha256(sha256),
        force=force,
        concurrency=concurrency,
        chunk_size=parse_size(chunk_size) if chunk_size is not None else None,
        artifact_type=artifact_type,
    )
    if out is not None:
        check_plain_filename(out, "--out")
    if out and len(targets) > 1:
        raise UsageError("--out names one file, but several URLs were given")
    factory = progress_factory(state.quiet, state.json_output)
    metrics_hook = checkpoint_writer(config)
    placer = None
    if place:
        from .place import Placer, render_report, report_json

        placer = Placer(state, artifact_type)
    for target in targets:
        if pick:
            from .picker import with_picker

            results = with_picker(
                lambda uri: download_uri(config, uri, options, factory, on_checkpoint=metrics_hook),
                target, pick=True)
        else:
            results = download_uri(config, target, options, factory, on_checkpoint=metrics_hook)
        for result in results:
            report = placer.place(result) if placer else None
            sidecars = []
            if metadata if metadata is not None else config.general.metadata:
                from ..app.metadata import write_metadata

                sidecars = write_metadata(config, result, [report] if report else [],
                                          placer.apps if placer else [])
            if state.json_output:
                import json

                click.echo(json.dumps({"id": result.download_id, "path": str(result.path),
                                       "sha256": result.sha256, "size": result.size,
                                       "fetched_bytes": result.fetched_bytes,
                                       "already_present": result.already_present,
                                       **({"sidecars": [{"path": str(c.path), "action": c.action}
                                                        for c in sidecars]} if sidecars else {}),
                                       **({"placement": report_json(report)} if report else {})}))
            else:
                click.echo(f"{result.path}\n  sha256 {result.sha256}")
                for line in render_report(report)[1:] if report else []:
                    click.echo(line)
                for sidecar in sidecars:
                    click.echo(f"  metadata {sidecar.action} {sidecar.path}")
    if placer:
        placer.finish()
