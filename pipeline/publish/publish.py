"""``hardneg publish``: turn a negatives dataset folder into a Hugging Face Hub dataset repository.

The repository holds plain Parquet under ``data/`` (``<split>-XXXXX-of-YYYYY.parquet``, see
:mod:`pipeline.publish.layout`) and a ``README.md`` dataset card generated from the manifest and the
quality report (:mod:`pipeline.publish.card`), so ``datasets`` and fsspec (``hf://``) read it like
local shards and the dataset explains where it came from. Image bytes are published only when the
dataset embeds them and ``with_images`` is set; otherwise only the image path is kept.

Before anything is written the folder is checked against its manifest (same shards, rows and
checksums). A dry run writes the repository to a folder, replacing an earlier dry run whole; an
upload (:mod:`pipeline.publish.upload`) sends only what the Hub does not have yet and resumes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from pipeline.contract.shards import verify_shards
from pipeline.core.errors import HardnegError
from pipeline.publish.config import DEFAULT_LICENSE, MAX_SHARD_BYTES, PublishConfig
from pipeline.publish.layout import CARD, DATA_DIR, Layout, add_card, build_layout

if TYPE_CHECKING:
    from pipeline.contract.manifest import Manifest

log = logging.getLogger(__name__)

_SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")

__all__ = ["DEFAULT_LICENSE", "PublishConfig", "publish", "publish_dataset"]


def publish(
    dataset_dir: str | Path,
    repo_id: str,
    *,
    dry_run_dir: str | Path | None = None,
    private: bool = False,
    revision: str | None = None,
    license: str = DEFAULT_LICENSE,
    with_images: bool = False,
    token: str | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    **settings: Any,
) -> dict[str, Any]:
    """Publish ``dataset_dir`` to ``repo_id`` (or write the repository to ``dry_run_dir``).

    Further :class:`PublishConfig` fields may be given as keywords. Returns a summary: the files,
    what was uploaded and deleted, and the commits made (none when the Hub already had it all).
    """
    from pipeline.core.config import from_dict

    cfg = from_dict(
        PublishConfig,
        {
            "repo_id": repo_id, "private": private, "revision": revision, "license": license,
            "with_images": with_images, "max_shard_bytes": max_shard_bytes, **settings,
        },
    )
    return publish_dataset(dataset_dir, cfg, dry_run_dir=dry_run_dir, token=token)


def publish_dataset(
    dataset_dir: str | Path,
    cfg: PublishConfig,
    *,
    dry_run_dir: str | Path | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """:func:`publish` with a ready config (the CLI's entry point)."""
    cfg.validate()
    from pipeline.contract.manifest import load_manifest

    dataset_dir = Path(dataset_dir)
    manifest = load_manifest(dataset_dir)
    shard_sha = verify_shards(dataset_dir, manifest)
    _check_split_names(shard_sha)
    report_path = Path(cfg.report) if cfg.report else dataset_dir / "report.json"
    report = _load_report(report_path, explicit=cfg.report is not None)

    if dry_run_dir is not None:
        return _dry_run(dataset_dir, manifest, report, cfg, shard_sha, Path(dry_run_dir))
    from pipeline.publish.upload import upload_layout

    with tempfile.TemporaryDirectory(prefix="hardneg-publish-") as tmp:
        layout = build_repository(dataset_dir, manifest, report, cfg, Path(tmp), shard_sha, copy_reused=False)
        result = upload_layout(layout, cfg, manifest, token=token)
    return {**_summary(cfg, layout), **result}


def build_repository(
    dataset_dir: Path,
    manifest: Manifest,
    report: dict[str, Any] | None,
    cfg: PublishConfig,
    staging: Path,
    shard_sha: dict[str, str],
    copy_reused: bool,
) -> Layout:
    """The data files and the card under ``staging``; the card describes the files as laid out."""
    from pipeline.publish.card import render_card

    layout = build_layout(dataset_dir, cfg, staging, shard_sha, copy_reused)
    add_card(layout, render_card(manifest, layout, report, cfg, dataset_dir), staging)
    return layout


def _dry_run(
    dataset_dir: Path, manifest: Manifest, report: dict[str, Any] | None, cfg: PublishConfig,
    shard_sha: dict[str, str], out: Path,
) -> dict[str, Any]:
    """Write the repository to ``out`` through a staging folder beside it, so ``out`` is never half written."""
    _check_dry_run_target(out, dataset_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.publish-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it owner-only; the result is an ordinary folder
    try:
        layout = build_repository(dataset_dir, manifest, report, cfg, staging, shard_sha, copy_reused=True)
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote the repository for %s to %s (%d files); nothing was uploaded", cfg.repo_id, out, len(layout.entries))
    for e in layout.entries:
        e.local = out / e.path
    return _summary(cfg, layout, dry_run_dir=out)


# --------------------------------------------------------------------------- checking the input


def _check_split_names(shard_paths: Iterable[str]) -> None:
    for rel in shard_paths:
        split = rel.split("/", 1)[0]
        if not _SPLIT_NAME.match(split):
            raise HardnegError(f"split name {split!r} is not a valid Hub split name (letters, digits, _ and .)")


def _load_report(path: Path, explicit: bool) -> dict[str, Any] | None:
    if not path.exists():
        if explicit:
            raise HardnegError(f"quality report {path} does not exist")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HardnegError(f"cannot read quality report {path}: {e}") from None
    if not isinstance(data, dict):
        raise HardnegError(f"quality report {path} is not a JSON object")
    return data


def _check_dry_run_target(out: Path, dataset_dir: Path) -> None:
    """Refuse to replace a folder that is not an earlier dry run (or the dataset itself)."""
    out_r, ds_r = out.resolve(), dataset_dir.resolve()
    if out_r == ds_r or ds_r in out_r.parents or out_r in ds_r.parents:
        raise HardnegError(f"--dry-run folder {out} must be outside the dataset folder {dataset_dir}")
    if out.exists():
        if not out.is_dir():
            raise HardnegError(f"--dry-run target {out} exists and is not a folder")
        names = {p.name for p in out.iterdir()}
        if names - {CARD, DATA_DIR}:
            raise HardnegError(
                f"--dry-run folder {out} holds other files ({sorted(names - {CARD, DATA_DIR})[:5]}); "
                "give an empty or new folder, or an earlier dry-run folder"
            )


def _replace_dir(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest``, replacing an earlier dry run whole (never a half-written mix)."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(src, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _summary(cfg: PublishConfig, layout: Layout, dry_run_dir: Path | None = None) -> dict[str, Any]:
    return {
        "repo_id": cfg.repo_id,
        "revision": cfg.revision or "main",
        "dry_run_dir": str(dry_run_dir) if dry_run_dir is not None else None,
        "images_included": layout.images_included,
        "files": [
            {"path": e.path, "size": e.size, "sha256": e.sha256, "split": e.split, "rows": e.rows, "origin": e.origin}
            for e in layout.entries
        ],
        "splits": {s: sum(e.rows for e in es) for s, es in layout.split_entries().items()},
    }
