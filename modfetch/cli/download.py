"""``modfetch download``: fetch URLs (http(s)://, hf://, civitai://), verify, and print path + SHA-256."""

from __future__ import annotations

import dataclasses
import logging

import click

from ..app.download import DownloadOptions, download_uri, validate_sha256
from ..artifacts import TYPES
from ..engine.mirrors import check_mirrors
from ..errors import ModfetchError, UsageError
from ..metrics import checkpoint_writer
from ..paths import expand_path
from ..util.filenames import check_plain_filename
from ..util.inputfile import read_uri_list
from ..util.sizes import parse_rate, parse_size
from . import report_error, write_metrics
from .context import CliState, global_options, pass_state
from .progress import progress_factory

log = logging.getLogger("modfetch.cli")


@click.command("download")
@click.argument("urls", nargs=-1)
@click.option("--url", "url_options", multiple=True, help="URL or URI to fetch (repeatable).")
@click.option("--dest", type=click.Path(file_okay=False), help="Destination directory (default: download_root).")
@click.option("--out", help="File name to save as (single file only).")
@click.option("--sha256", "sha256", help="Expected SHA-256; the download fails if the bytes differ.")
@click.option("--force", is_flag=True, help="Replace an existing different file at the target.")
@click.option("--concurrency", type=click.IntRange(1, 64),
              help="Connections per file, fixed (default: start at per_file_chunks, add more while they raise "
                   "the rate, up to max_connections_per_file).")
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
@click.option("--input-file", "-i", "input_file", metavar="FILE",
              help="Read URIs from FILE, one per line ('#' comments, blank lines; '-': standard input).")
@click.option("--limit-rate", "limit_rate", metavar="RATE",
              help="Download at most RATE bytes/s in total (e.g. 10M, 500K; 0: unlimited), shared by every "
                   "connection and file (default: network.max_bytes_per_second).")
@click.option("--mirror", "mirrors", multiple=True, metavar="URL",
              help="Another http(s) URL serving the same file (repeatable): chunks are spread over every source "
                   "whose size and validators match; a failing or lying mirror is dropped.")
@click.option("--dry-run", is_flag=True,
              help="Resolve and show each file (URL, name, size, path, SHA-256, placements, present?); "
                   "fetch no file bytes, write nothing.")
@global_options
@pass_state
def command(state: CliState, urls: tuple[str, ...], url_options: tuple[str, ...], dest: str | None,
            out: str | None, sha256: str | None, force: bool, concurrency: int | None, chunk_size: str | None,
            pick: bool, place: bool, metadata: bool | None, artifact_type: str | None,
            batch_file: str | None, input_file: str | None, dry_run: bool, limit_rate: str | None,
            mirrors: tuple[str, ...]) -> None:
    """Download files, verify their SHA-256 and print each final path and hash.

    Reruns resume from where the last run stopped; a file already present and verified is not fetched
    again.  URIs: http(s)://..., hf://owner/repo/path[?rev=REV], civitai://model/ID[?version=V].
    Several URIs: each is tried even when an earlier one fails; exit 1 if any failed.
    """
    if limit_rate is not None:
        _apply_limit_rate(state, limit_rate)
    try:
        _download(state, urls, url_options, dest, out, sha256, force, concurrency, chunk_size, pick, place,
                  metadata, artifact_type, batch_file, input_file, dry_run, mirrors)
    finally:
        if not dry_run:  # a dry run writes nothing, not even the textfile
            write_metrics(state)  # every run, also one that failed before any download started


def _apply_limit_rate(state: CliState, text: str) -> None:
    """--limit-rate overrides network.max_bytes_per_second for this run (batch jobs included)."""
    try:
        rate = parse_rate(text)
    except UsageError as exc:
        raise UsageError(f"--limit-rate: {exc.message}", hint="e.g. --limit-rate 10M or 500K (0: unlimited)") \
            from None
    config = state.config
    state._config = dataclasses.replace(
        config, network=dataclasses.replace(config.network, max_bytes_per_second=rate))


def _download(state: CliState, urls: tuple[str, ...], url_options: tuple[str, ...], dest: str | None,
              out: str | None, sha256: str | None, force: bool, concurrency: int | None, chunk_size: str | None,
              pick: bool, place: bool, metadata: bool | None, artifact_type: str | None, batch_file: str | None,
              input_file: str | None, dry_run: bool, mirrors: tuple[str, ...] = ()) -> None:
    # Placement, batch and picker code is imported only when asked for: a plain download starts faster.
    targets = [*url_options, *urls]
    listed_mirrors: dict[int, tuple[str, ...]] = {}  # target index -> the mirrors its -i line named
    if input_file is not None:
        if batch_file:
            raise UsageError("--input-file cannot be combined with --batch",
                             hint="a batch file lists its own jobs (see docs/PLACEMENT.md)")
        listed = read_uri_list(input_file)
        if not listed and not targets:
            raise UsageError(f"--input-file {input_file} lists no URIs",
                             hint="one URI per line; lines starting with # are comments")
        for item in listed:
            if item.mirrors:
                where = f"--input-file {input_file}:{item.line}: mirror"
                listed_mirrors[len(targets)] = check_mirrors(item.mirrors, where)
            targets.append(item.uri)
    if batch_file and dry_run:
        raise UsageError("--dry-run cannot be combined with --batch",
                         hint="list the batch's URIs in a file and use --dry-run -i FILE")
    if batch_file:
        from .place import run_batch_cli

        if targets:
            raise UsageError("--batch cannot be combined with URLs",
                             hint="add them as jobs to the batch file")
        # Per-file options would otherwise be dropped without a word: each job carries its own.
        ignored = [flag for flag, value in (("--dest", dest), ("--out", out), ("--sha256", sha256),
                                            ("--pick", pick), ("--mirror", mirrors)) if value]
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
        mirrors=check_mirrors(mirrors),
    )
    if mirrors and len(targets) > 1:
        raise UsageError("--mirror serves one file, but several URLs were given",
                         hint="download one file per command, or give each batch job its own mirrors: list")
    if out is not None:
        check_plain_filename(out, "--out")
    if out and len(targets) > 1:
        raise UsageError("--out names one file, but several URLs were given")
    if len(targets) > 1:
        from ..resolvers.registry import check_uri

        for target in targets:  # bad input stops the run before the first file, not after it
            check_uri(target, config)
    if dry_run:
        return _dry_run(state, targets, options, pick, place)
    factory = progress_factory(state.quiet, state.json_output)
    metrics_hook = checkpoint_writer(config)
    placer = None
    if place:
        from .place import Placer, render_report, report_json

        placer = Placer(state, artifact_type)
    failed = 0
    for index, target in enumerate(targets):
        # --mirror (one target only) and the mirrors an -i line lists after its URI
        these = dataclasses.replace(options, mirrors=tuple(dict.fromkeys(
            (*options.mirrors, *listed_mirrors.get(index, ())))))
        try:
            if pick:
                from .picker import with_picker

                results = with_picker(
                    lambda uri: download_uri(config, uri, these, factory, on_checkpoint=metrics_hook),  # noqa: B023
                    target, pick=True)
            else:
                results = download_uri(config, target, these, factory, on_checkpoint=metrics_hook)
        except ModfetchError as error:
            if len(targets) == 1 or isinstance(error, UsageError):
                raise  # bad input (exit 2) stops the run: the command line needs fixing first
            # Like --batch: one failed URI is reported and the others still run.
            failed += 1
            report_error(error)
            continue
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
                                       **({"mirrors": result.sources} if result.sources else {}),
                                       **({"sidecars": [{"path": str(c.path), "action": c.action}
                                                        for c in sidecars]} if sidecars else {}),
                                       **({"placement": report_json(report)} if report else {})}))
            else:
                click.echo(f"{result.path}\n  sha256 {result.sha256}")
                for excluded in (result.sources or {}).get("excluded", []):
                    from ..util.termtext import printable

                    click.echo(printable(f"  mirror excluded {excluded['url']}: {excluded['reason']}"))
                for line in render_report(report)[1:] if report else []:
                    click.echo(line)
                for sidecar in sidecars:
                    click.echo(f"  metadata {sidecar.action} {sidecar.path}")
    if placer:
        placer.finish()
    if len(targets) > 1:
        summary = f"{len(targets) - failed} of {len(targets)} downloads succeeded"
        if failed:
            raise ModfetchError(summary, hint="rerun the same command: finished files are not fetched again")
        log.info("%s", summary)


def _dry_run(state: CliState, targets: list[str], options: DownloadOptions, pick: bool, place: bool) -> None:
    """Print what a real run would do; with --json one JSON list of files on stdout."""
    from ..app.dryrun import dry_run
    from ..app.place import configured_apps
    from ..util.sizes import human_size
    from ..util.termtext import printable

    config = state.config
    apps = configured_apps(config) if place else None
    planned = []
    for target in targets:
        if pick:
            from .picker import with_picker

            planned.extend(with_picker(lambda uri: dry_run(config, uri, options, apps), target, pick=True))
        else:
            planned.extend(dry_run(config, target, options, apps))
    if state.json_output:
        import json

        click.echo(json.dumps([item.as_dict() for item in planned], indent=2))
        return
    for item in planned:
        size = "size unknown" if item.size is None else f"{human_size(item.size)}, {item.size} bytes"
        lines = [item.url, f"  file    {item.name} ({size})", f"  path    {item.path}  [{item.state}]",
                 f"  sha256  {item.sha256 or 'not published; computed while downloading'}",
                 *(f"  place   {p['app']}  {p['mode']}  {p['target']}" for p in item.placements)]
        for line in lines:  # names and URLs come from the server: no escape sequence reaches the terminal
            click.echo(printable(line))
