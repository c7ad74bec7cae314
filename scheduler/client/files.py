"""Commands that move files: dataset uploads, artifact listings and checked downloads."""

from __future__ import annotations

import json
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from scheduler.client import render
from scheduler.client.commands import KeyOption, ServerOption, _client, _console, _one_line_errors
from scheduler.client.http import ClientError, JsonClient

# What a dataset directory contributes to its upload: the annotation list and the audio it
# names; anything else there (notes, checkpoints) stays on the user's disk.
DATASET_SUFFIXES = {".list", ".wav", ".flac", ".ogg", ".mp3"}
# Files this large get a progress bar on a terminal.
PROGRESS_BYTES = 8 << 20
# How long `submit --dataset` waits for the service to finish validating an upload.
VALIDATION_WAIT_S = 600.0

datasets_app = typer.Typer(help="Upload and list training datasets.", no_args_is_help=True)


def fmt_bytes(size: int) -> str:
    """A byte count for people: 512 B, 3.4 MiB, 1.2 GiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def zip_dataset_dir(directory: Path, into: Path) -> Path:
    """Zip a dataset directory's `.list` and audio files (paths relative to it)."""
    members = sorted(
        path
        for path in directory.rglob("*")
        if path.is_file() and path.suffix.lower() in DATASET_SUFFIXES
    )
    if not any(path.suffix.lower() == ".list" for path in members):
        raise ClientError(f"{directory} holds no .list annotation file")
    with zipfile.ZipFile(into, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in members:
            archive.write(path, path.relative_to(directory).as_posix())
    return into


def upload_dataset_path(client: JsonClient, source: Path, *, name: str | None) -> dict[str, Any]:
    """Upload a dataset from a zip or a directory (zipped on the fly)."""
    if source.is_dir():
        with tempfile.TemporaryDirectory(prefix="greenwindow-upload-") as scratch:
            archive = zip_dataset_dir(source, Path(scratch) / "dataset.zip")
            return client.upload_dataset(archive, name=name or source.resolve().name)
    if source.is_file():
        return client.upload_dataset(source, name=name or source.stem)
    raise ClientError(f"{source}: no such file or directory")


def wait_until_usable(
    client: JsonClient,
    dataset: dict[str, Any],
    *,
    sleep: Callable[[float], None] = time.sleep,
    timeout_s: float = VALIDATION_WAIT_S,
) -> dict[str, Any]:
    """The dataset once the service has validated it (at once when it has no `state`)."""
    waited = 0.0
    while dataset.get("state") not in (None, "ready"):
        if dataset["state"] == "invalid":
            reason = dataset.get("state_reason") or dataset.get("error") or "invalid"
            raise ClientError(f"dataset {dataset['id']} was refused: {reason}")
        if waited >= timeout_s:
            raise ClientError(
                f"dataset {dataset['id']} still {dataset['state']} after {waited:.0f} s"
            )
        sleep(1.0)
        waited += 1.0
        dataset = client.dataset(str(dataset["id"]))
    return dataset


def _dataset_rows(dataset: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("id", str(dataset["id"])),
        ("name", str(dataset["name"])),
        ("utterances", str(dataset["utterances"])),
        ("audio", f"{dataset['audio_seconds']:.1f} s"),
        ("speakers", str(dataset["speakers"])),
        ("languages", ", ".join(dataset["languages"]) or "-"),
        ("size", fmt_bytes(dataset["size"])),
        ("sha256", str(dataset["sha256"])),
        ("uploaded", render.fmt_time(dataset["created_at"])),
    ]
    if dataset.get("state"):
        rows.append(("state", str(dataset["state"])))
    return rows


@datasets_app.command("upload")
def datasets_upload(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(metavar="DIR|ZIP", help="Dataset directory or zip.")],
    name: Annotated[str | None, typer.Option(help="Dataset name (default: the file's).")] = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Upload a dataset (a directory is zipped first: its .list and audio files only)."""
    with _one_line_errors(), _client(ctx, server, key) as client:
        dataset = upload_dataset_path(client, source, name=name)
    typer.echo(f"uploaded dataset {dataset['id']} ({dataset['utterances']} utterances)")


@datasets_app.command("list")
def datasets_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Your team's datasets, newest first."""
    with _one_line_errors(), _client(ctx, server, key) as client:
        found = client.datasets()
    if as_json:
        for dataset in found:
            typer.echo(json.dumps(dataset))
        return
    if not found:
        typer.echo("no datasets")
        return
    table = Table("id", "name", "utterances", "audio", "languages", "uploaded")
    for dataset in found:
        table.add_row(
            str(dataset["id"]),
            str(dataset["name"]),
            str(dataset["utterances"]),
            f"{dataset['audio_seconds']:.0f} s",
            ", ".join(dataset["languages"]),
            render.fmt_time(dataset["created_at"]),
        )
    _console().print(table)


@datasets_app.command("show")
def datasets_show(
    ctx: typer.Context,
    dataset_id: Annotated[str, typer.Argument(metavar="ID", help="Dataset id.")],
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """One dataset's figures."""
    with _one_line_errors(), _client(ctx, server, key) as client:
        dataset = client.dataset(dataset_id)
    _console().print(render.key_value_table(_dataset_rows(dataset)))


def artifacts(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The raw list as JSON.")] = False,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """List the files a job produced (adapters, merged weights, checkpoints, logs)."""
    with _one_line_errors(), _client(ctx, server, key) as client:
        found = client.artifacts(job_id)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo(f"job {job_id} has no artifacts yet")
        return
    table = Table("name", "size", "attempt", "sha256", "stored")
    for item in found:
        table.add_row(
            str(item["name"]),
            fmt_bytes(item["size"]),
            str(item["attempt"]),
            str(item["sha256"])[:16] + "…",
            render.fmt_time(item["created_at"]),
        )
    _console().print(table)


def download(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id.")],
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="[NAME ...]", help="Artifacts to fetch (default: all)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Directory to write into.")] = Path("."),
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Download a job's artifacts, each checked against its sha256 before it is kept."""
    console = _console()
    with _one_line_errors(), _client(ctx, server, key) as client:
        listed = {item["name"]: item for item in client.artifacts(job_id)}
        wanted = names or sorted(listed)
        unknown = [name for name in wanted if name not in listed]
        if unknown:
            known = ", ".join(sorted(listed)) or "none yet"
            raise ClientError(f"job {job_id} has no artifact {unknown[0]!r} (it has: {known})")
        for name in wanted:
            item = listed[name]
            if console.is_terminal and item["size"] >= PROGRESS_BYTES:
                with Progress(
                    TextColumn("{task.description}", markup=False),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    console=console,
                    transient=True,
                ) as bar:
                    task = bar.add_task(name, total=item["size"])

                    def advance(count: int, task: TaskID = task) -> None:
                        bar.advance(task, count)

                    path = client.download_artifact(job_id, item, out, on_bytes=advance)
            else:
                path = client.download_artifact(job_id, item, out)
            console.print(f"{path} ({fmt_bytes(item['size'])}, sha256 ok)")


def register_file_commands(app: typer.Typer) -> None:
    """Add `datasets`, `artifacts` and `download` to the `greenwindow` app."""
    app.add_typer(datasets_app, name="datasets")
    app.command(name="artifacts")(artifacts)
    app.command(name="download")(download)
