"""``hardneg publish``: turn a negatives dataset folder into a Hugging Face Hub dataset repository.

The repository holds plain Parquet under ``data/`` (``<split>-XXXXX-of-YYYYY.parquet``) and a
``README.md`` dataset card generated from the manifest, so ``datasets`` and fsspec (``hf://``) read
it like local shards and the dataset explains where it came from.

Shards are reused byte for byte when they fit the Hub's guidance (files of at most a few hundred MB,
which is what ``datasets.push_to_hub`` writes: 500 MB; row groups small enough for the dataset
viewer, whose scan limit is about 300 MB: ``datasets`` aims at 100 MB) and carry no image bytes that
must be left out; otherwise a split is rewritten. Image bytes are published only when the dataset
embeds them and ``with_images`` is set; otherwise only the image path is kept.

Uploading compares each file's sha256 with the remote LFS sha256 (git blob sha1 for small files)
and sends only what differs, in commits of bounded size, card and deletions last: publishing an
unchanged dataset makes no commit, and a run that failed half-way resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import yaml

from pipeline.contract.shards import verify_shards
from pipeline.core.errors import ConfigError, HardnegError

if TYPE_CHECKING:  # pyarrow is imported where used, so `hardneg --help` stays fast
    import pyarrow as pa
    import pyarrow.parquet as pq

log = logging.getLogger(__name__)

DEFAULT_LICENSE = "cc-by-4.0"
#: Hub task ids (huggingface.js ``PIPELINE_DATA``) shown in the dataset filters that fit negatives
#: for contrastive image-text training: CLIP-style zero-shot classification, captioning, retrieval
TASK_CATEGORIES = ("zero-shot-image-classification", "image-to-text", "text-retrieval")
#: ``datasets.config.MAX_SHARD_SIZE`` (what ``push_to_hub`` writes)
MAX_SHARD_BYTES = 500_000_000
#: ``datasets.config.MAX_ROW_GROUP_SIZE`` (uncompressed); the viewer refuses row groups over ~300 MB
MAX_ROW_GROUP_BYTES = 100_000_000
CARD = "README.md"
DATA_DIR = "data"
_SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")

FAMILY_DESCRIPTIONS = {
    "relation_swap": "exchanges the two arguments of a relation (who does what to whom)",
    "attribute_swap": "exchanges the attributes of two objects",
    "object_swap": "exchanges two object nouns",
    "relation_replace": "replaces a relation with a contrasting one (on -> under)",
    "attribute_replace": "replaces an attribute with another of the same kind (red -> blue)",
    "object_replace": "replaces an object with a sibling of its category (dog -> cat)",
}


@dataclass
class PublishConfig:
    """Settings of ``hardneg publish`` (the token is never a setting: it comes from the usual places)."""

    repo_id: str = ""
    #: licence id of the published dataset (Hub licence ids); the card also states the source's
    license: str = DEFAULT_LICENSE
    private: bool = False
    #: branch to publish to (created from main when missing); None = main
    revision: str | None = None
    #: publish embedded image bytes (only when the dataset has them)
    with_images: bool = False
    pretty_name: str | None = None
    #: quality report to summarise in the card; None = ``<dataset>/report.json`` when present
    report: str | None = None
    task_categories: list[str] = field(default_factory=lambda: list(TASK_CATEGORIES))
    examples_per_family: int = 3
    max_shard_bytes: int = MAX_SHARD_BYTES
    max_row_group_bytes: int = MAX_ROW_GROUP_BYTES
    #: an upload is cut into commits of at most this many bytes / files (each one resumable)
    max_commit_bytes: int = 2_000_000_000
    max_commit_files: int = 100

    def validate(self) -> None:
        if not _REPO_ID.match(self.repo_id or ""):
            raise ConfigError(f"repo_id must look like OWNER/NAME, got {self.repo_id!r}")
        if self.max_shard_bytes < 1 or self.max_row_group_bytes < 1:
            raise ConfigError("max_shard_bytes and max_row_group_bytes must be >= 1")
        if self.max_commit_bytes < 1 or self.max_commit_files < 1:
            raise ConfigError("max_commit_bytes and max_commit_files must be >= 1")
        if not self.license:
            raise ConfigError("license must name a licence (e.g. cc-by-4.0)")


@dataclass
class RepoEntry:
    """One file of the repository to publish and where its bytes are now."""

    path: str
    local: Path
    size: int
    sha256: str
    split: str | None = None
    rows: int = 0
    #: uncompressed Parquet bytes (the card's ``num_bytes``)
    data_bytes: int = 0
    #: "reused" (the shard itself), "rewritten" or "card"
    origin: str = "reused"


@dataclass
class Layout:
    entries: list[RepoEntry]
    embeds_images: bool
    images_included: bool

    def split_entries(self) -> dict[str, list[RepoEntry]]:
        out: dict[str, list[RepoEntry]] = {}
        for e in self.entries:
            if e.split is not None:
                out.setdefault(e.split, []).append(e)
        return out


# --------------------------------------------------------------------------- public API


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
        out = Path(dry_run_dir)
        _check_dry_run_target(out, dataset_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.publish-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it owner-only; the result is an ordinary folder
        try:
            layout = build_layout(dataset_dir, manifest, report, cfg, staging, shard_sha, copy_reused=True)
            _replace_dir(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("wrote the repository for %s to %s (%d files); nothing was uploaded", cfg.repo_id, out, len(layout.entries))
        for e in layout.entries:
            e.local = out / e.path
        return _summary(cfg, layout, dry_run_dir=out)

    with tempfile.TemporaryDirectory(prefix="hardneg-publish-") as tmp:
        layout = build_layout(dataset_dir, manifest, report, cfg, Path(tmp), shard_sha, copy_reused=False)
        result = upload_layout(layout, cfg, manifest, token=token)
    return {**_summary(cfg, layout), **result}


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


# --------------------------------------------------------------------------- the repository layout


def build_layout(
    dataset_dir: Path,
    manifest: dict[str, Any],
    report: dict[str, Any] | None,
    cfg: PublishConfig,
    staging: Path,
    shard_sha: dict[str, str],
    copy_reused: bool,
) -> Layout:
    """Write the repository content under ``staging`` (shards that are reused are only copied when asked)."""
    from pipeline.contract.shards import list_shards

    splits = list_shards(dataset_dir)
    infos = {split: [_shard_info(f) for f in files] for split, files in splits.items()}
    embeds = any(i["embedded_images"] for files in infos.values() for i in files)
    keep_images = embeds and cfg.with_images
    if cfg.with_images and not embeds:
        log.warning("--with-images: %s embeds no image bytes; the images stay references by path", dataset_dir)
    if embeds and not keep_images:
        log.info("the dataset embeds image bytes; they are left out (give --with-images to publish them)")

    entries: list[RepoEntry] = []
    (staging / DATA_DIR).mkdir(parents=True, exist_ok=True)
    for split, files in splits.items():
        info = infos[split]
        too_big = [i for i in info if i["size"] > cfg.max_shard_bytes or i["max_row_group"] > cfg.max_row_group_bytes]
        strip = any(i["embedded_images"] for i in info) and not keep_images
        if not too_big and not strip:
            n = len(files)
            for j, (f, i) in enumerate(zip(files, info)):
                path = f"{DATA_DIR}/{split}-{j:05d}-of-{n:05d}.parquet"
                local = f
                if copy_reused:
                    local = staging / path
                    shutil.copyfile(f, local)
                rel = f.relative_to(dataset_dir).as_posix()
                entries.append(RepoEntry(path, local, i["size"], shard_sha[rel], split, i["rows"], i["data_bytes"]))
            continue
        why = "image bytes are left out" if strip else f"{len(too_big)} shard(s) exceed the Hub size guidance"
        log.info("rewriting split %s (%s)", split, why)
        entries.extend(reshard(split, files, staging, cfg, keep_images))

    card = render_card(manifest, Layout(entries, embeds, keep_images), report, cfg, dataset_dir)
    card_path = staging / CARD
    card_path.write_text(card, encoding="utf-8")
    data = card.encode()
    entries.append(RepoEntry(CARD, card_path, len(data), hashlib.sha256(data).hexdigest(), origin="card"))
    return Layout(entries, embeds, keep_images)


def _shard_info(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    rg_sizes = [md.row_group(i).total_byte_size for i in range(md.num_row_groups)]
    return {
        "size": path.stat().st_size,
        "rows": md.num_rows,
        "data_bytes": sum(rg_sizes),
        "max_row_group": max(rg_sizes, default=0),
        "embedded_images": _embedded_images(path, md),
    }


def _embedded_images(path: Path, md: pq.FileMetaData) -> int:
    """How many rows carry image bytes, from column statistics when written (else by reading the column)."""
    import pyarrow.parquet as pq

    from pipeline.contract.schema import IMAGE

    total = 0
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        col = next((rg.column(j) for j in range(rg.num_columns) if rg.column(j).path_in_schema == f"{IMAGE}.bytes"), None)
        if col is None:
            return 0
        stats = col.statistics
        if stats is None or not stats.has_null_count:
            table = pq.read_table(path, columns=[IMAGE])
            return len(table) - table.column(IMAGE).combine_chunks().field("bytes").null_count
        total += rg.num_rows - stats.null_count
    return total


def reshard(split: str, files: list[Path], staging: Path, cfg: PublishConfig, keep_images: bool) -> list[RepoEntry]:
    """Rewrite a split as files of at most ``max_shard_bytes`` with row groups under ``max_row_group_bytes``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from pipeline.core.atomic import sha256_file

    schema = pq.read_schema(files[0])
    metas = [pq.ParquetFile(f).metadata for f in files]
    rows = sum(m.num_rows for m in metas)
    raw = sum(m.row_group(i).total_byte_size for m in metas for i in range(m.num_row_groups))
    row_bytes = max(1.0, raw / max(rows, 1))
    stored_row_bytes = max(1.0, sum(f.stat().st_size for f in files) / max(rows, 1))
    # row groups under the viewer's limit and small enough (a quarter file) to cut files near the size
    rg_rows = max(1, min(1000, int(cfg.max_row_group_bytes // row_bytes), int(cfg.max_shard_bytes // (4 * stored_row_bytes))))

    parts: list[tuple[Path, int]] = []
    writer: pq.ParquetWriter | None = None
    sink: pa.NativeFile | None = None
    part_rows = 0
    last_group_bytes = 0

    def close() -> None:
        nonlocal writer, sink
        if writer is not None:
            writer.close()
            sink.close()
            parts.append((current, part_rows))
            writer = sink = None

    bar = tqdm(total=rows, desc=f"reshard {split}", unit=" rows", mininterval=2, leave=False)
    try:
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=rg_rows):
                table = pa.Table.from_batches([batch]).replace_schema_metadata(schema.metadata)
                if not keep_images:
                    table = _strip_image_bytes(table)
                if writer is not None and sink.tell() + last_group_bytes > cfg.max_shard_bytes:
                    close()
                if writer is None:
                    current = staging / DATA_DIR / f".{split}-{len(parts):05d}.parquet.tmp"
                    sink = pa.OSFile(str(current), "wb")
                    writer = _parquet_writer(sink, schema)
                    part_rows = 0
                before = sink.tell()
                writer.write_table(table, row_group_size=rg_rows)
                last_group_bytes = sink.tell() - before
                part_rows += table.num_rows
                bar.update(table.num_rows)
        close()
    finally:
        bar.close()
        if writer is not None:
            writer.close()
            sink.close()

    n = len(parts)
    entries = []
    for j, (tmp, nrows) in enumerate(parts):
        path = f"{DATA_DIR}/{split}-{j:05d}-of-{n:05d}.parquet"
        final = staging / path
        os.replace(tmp, final)
        md = pq.ParquetFile(final).metadata
        data_bytes = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
        entries.append(RepoEntry(path, final, final.stat().st_size, sha256_file(final), split, nrows, data_bytes, "rewritten"))
    return entries


def _parquet_writer(sink: pa.NativeFile, schema: pa.Schema) -> pq.ParquetWriter:
    import pyarrow.parquet as pq

    kwargs: dict[str, Any] = {"compression": "zstd", "write_statistics": True, "write_page_index": True}
    try:  # content-defined chunking lets Xet deduplicate a re-published, slightly changed file
        return pq.ParquetWriter(sink, schema, use_content_defined_chunking=True, **kwargs)
    except TypeError:  # pyarrow < 21
        return pq.ParquetWriter(sink, schema, **kwargs)


def _strip_image_bytes(table: pa.Table) -> pa.Table:
    import pyarrow as pa

    from pipeline.contract.schema import IMAGE

    idx = table.schema.get_field_index(IMAGE)
    col = table.column(IMAGE).combine_chunks()
    _, paths = col.flatten()
    stripped = pa.StructArray.from_arrays(
        [pa.nulls(len(col), pa.binary()), paths], fields=list(col.type), mask=col.is_null()
    )
    return table.set_column(idx, table.schema.field(idx), stripped)


# --------------------------------------------------------------------------- the dataset card


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket of a row count."""
    for limit, name in _SIZE_CATEGORIES:
        if rows < limit:
            return name
    return "n>1T"


def features_yaml() -> list[dict[str, Any]]:
    """The schema's features in the card's YAML form (what ``datasets`` writes in ``dataset_info``)."""
    from pipeline.contract.schema import hf_features

    def inner(feat: Any) -> dict[str, Any]:
        t = feat.get("_type")
        if t == "Value":
            return {"dtype": feat["dtype"]}
        if t == "Image":
            return {"dtype": "image"}
        if t == "List":
            sub = feat["feature"]
            if "_type" not in sub:  # a struct
                return {"list": [{"name": k, **inner(v)} for k, v in sub.items()]}
            item = inner(sub)
            return {"list": item["dtype"] if list(item) == ["dtype"] else item}
        raise ValueError(f"no YAML form for feature {feat}")

    return [{"name": name, **inner(feat)} for name, feat in hf_features().items()]


def card_metadata(manifest: dict[str, Any], layout: Layout, cfg: PublishConfig) -> dict[str, Any]:
    by_split = layout.split_entries()
    rows = sum(e.rows for e in layout.entries)
    splits = [
        {"name": s, "num_bytes": sum(e.data_bytes for e in es), "num_examples": sum(e.rows for e in es)}
        for s, es in by_split.items()
    ]
    return {
        "license": cfg.license,
        "language": ["en"],
        "pretty_name": cfg.pretty_name or _pretty_name(manifest),
        "task_categories": list(cfg.task_categories),
        "size_categories": [size_category(rows)],
        "annotations_creators": ["machine-generated"],
        "source_datasets": ["extended"],
        "tags": ["hard-negatives", "compositionality", "vision-language", "clip", "ce-clip", "hardneg"],
        "configs": [
            {
                "config_name": "default",
                "data_files": [
                    {"split": s, "path": f"{DATA_DIR}/{s}-*-of-{len(es):05d}.parquet"} for s, es in by_split.items()
                ],
            }
        ],
        "dataset_info": {
            "config_name": "default",
            "features": features_yaml(),
            "splits": splits,
            "download_size": sum(e.size for e in layout.entries if e.split is not None),
            "dataset_size": sum(sp["num_bytes"] for sp in splits),
        },
    }


def _pretty_name(manifest: dict[str, Any]) -> str:
    return f"hardneg negatives: {manifest.get('name') or manifest['source']['name']}"


def source_facts(manifest: dict[str, Any], dataset_dir: Path) -> dict[str, Any]:
    """What is known about the source's licence and images (COCO is recognised; others are not)."""
    src = manifest.get("source", {})
    text = " ".join(str(src.get(k) or "") for k in ("name", "path", "format")).lower()
    first_path = _first_image_path(dataset_dir)
    coco = "coco" in text or bool(first_path and re.match(r"^(train|val|test)201[47]/", first_path))
    return {"coco": coco, "karpathy": coco and "karpathy" in text, "first_image_path": first_path}


def _first_image_path(dataset_dir: Path) -> str | None:
    from pipeline.contract.dataset import iter_rows
    from pipeline.contract.schema import IMAGE

    for row in iter_rows(dataset_dir, [IMAGE]):
        return (row[IMAGE] or {}).get("path")
    return None


def render_card(
    manifest: dict[str, Any],
    layout: Layout,
    report: dict[str, Any] | None,
    cfg: PublishConfig,
    dataset_dir: Path,
) -> str:
    from pipeline.contract.dataset import summarize

    meta = card_metadata(manifest, layout, cfg)
    facts = source_facts(manifest, dataset_dir)
    examples = summarize(dataset_dir, examples=cfg.examples_per_family, seed=0)["families"]
    src = manifest["source"]
    spacy = manifest.get("spacy", {})
    families = manifest["families"]
    by_split = layout.split_entries()
    repo, rev = cfg.repo_id, cfg.revision
    rows = sum(sp["num_examples"] for sp in meta["dataset_info"]["splits"])
    L: list[str] = []
    add = L.append

    add(f"# {meta['pretty_name']}\n")
    add(
        f"Hard-negative captions for **{src['name']}**: for each of its {rows:,} captions, minimally edited"
        " captions that no longer describe the image, because a relation, an attribute or an object was"
        " swapped or replaced. They are training data for compositional vision-language models in the"
        " style of CE-CLIP (Zhang, Awal, Agrawal, CVPR 2024) and NegCLIP. Generated offline by"
        f" hardneg {manifest['hardneg_version']} with rule-based edits on a spaCy"
        " parse; nothing here was written by a person or a language model.\n"
    )

    add("## Dataset structure\n")
    add("| split | rows | files |\n|---|---:|---:|")
    for s, es in by_split.items():
        add(f"| {s} | {sum(e.rows for e in es):,} | {len(es)} |")
    add("")
    add("One row per positive caption:\n")
    add("| column | content |\n|---|---|")
    add("| `id` | stable caption id from the source |")
    add("| `image` | " + ("the image (bytes and path)" if layout.images_included else "image reference: `path` only, `bytes` is empty (see *Images*)") + " |")
    add("| `caption` | the positive caption |")
    add("| `source`, `split` | source dataset name and split |")
    add("| `group` | captions of the same image share a group |")
    add("| one column per family | list of negative captions of that family (empty when none) |")
    add("| `provenance` | per negative: family, rule, text, edited token and character spans of the positive |")
    add("")

    add("## Negative families\n")
    add(
        "Figures from the generation manifest. Coverage is the share of captions with at least one negative"
        f" of the family; at most k = {manifest['config'].get('k')} negatives per family and caption are kept.\n"
    )
    add("| family | what it does | negatives | captions covered | coverage | negatives per caption | generated | rejected by filters |")
    add("|---|---|---:|---:|---:|---:|---:|---|")
    for fam, f in families.items():
        rej = ", ".join(f"{k}: {v:,}" for k, v in f.get("rejected", {}).items()) or "none"
        add(
            f"| {fam} | {FAMILY_DESCRIPTIONS.get(fam, '')} | {f['negatives']:,} | {f['captions_covered']:,}"
            f" | {100 * f['coverage']:.1f}% | {f['negatives_per_caption']:.3f} | {f['generated']:,} | {rej} |"
        )
    others = [c for c in FAMILY_DESCRIPTIONS if c not in families]
    if others:
        add(f"\nNot generated for this dataset (their columns are empty lists): {', '.join(others)}.")
    if manifest.get("skipped_total"):
        add(f"\nSource rows skipped (counted, not published): {manifest['skipped_total']:,} "
            f"({', '.join(f'{k}: {v:,}' for k, v in manifest['skipped'].items())}).")
    add("")

    add("## Examples\n")
    add("A seeded sample per family (positive, then one of its negatives).\n")
    for fam in families:
        exs = examples.get(fam, {}).get("examples", [])
        if not exs:
            continue
        add(f"**{fam}**\n")
        add("| positive | negative |\n|---|---|")
        for ex in exs:
            add(f"| {_cell(ex['caption'])} | {_cell(ex['negative'])} |")
        add("")

    add("## Quality report\n")
    L.extend(_report_lines(report))
    add("")

    add("## Images\n")
    if layout.images_included:
        add("Images are embedded in the `image` column (bytes and original path).\n")
    elif facts["coco"]:
        add(
            "Images are **not** included. `image.path` is relative to a folder holding the COCO 2014 images"
            " (`train2014/`, `val2014/`), e.g. `" + (facts["first_image_path"] or "val2014/...jpg") + "`."
            " Download them from [cocodataset.org](https://cocodataset.org/#download); they come from Flickr"
            " and are subject to the Flickr terms of use.\n"
        )
    else:
        add("Images are **not** included; `image.path` is the reference recorded by the source"
            f" ({src['name']}). Obtain the images from the source dataset.\n")

    add("## Usage\n")
    rev_arg = f', revision="{rev}"' if rev else ""
    first_split = next(iter(by_split), "train")
    add("```python\nfrom datasets import Image, load_dataset\n")
    add(f'ds = load_dataset("{repo}", split="{first_split}"{rev_arg})')
    if not layout.images_included:
        add('ds = ds.cast_column("image", Image(decode=False))  # rows carry the image path, not pixels')
    add('row = ds[0]\nprint(row["caption"], row["relation_swap"])\n```\n')
    hf_url = f"hf://datasets/{repo}" + (f"@{rev}" if rev else "")
    add("Train CE-CLIP on it with hardneg (the Parquet files stream like local shards):\n")
    root = "" if layout.images_included else " --set data.image_root=/path/to/coco"
    add(f"```bash\nhardneg train --data {hf_url}{root}\n```\n")

    add("## Provenance\n")
    add(f"- Source: **{src['name']}** (format `{src.get('format')}`), input fingerprint `{src.get('fingerprint')}`")
    add(f"- hardneg {manifest['hardneg_version']}, shard schema {manifest['schema_version']}, manifest version {manifest.get('manifest_version')}")
    add(f"- Config hash `{manifest['config_hash']}` (sha256 of the resolved config, input fingerprint, versions)")
    add(
        f"- spaCy {spacy.get('spacy_version', '?')}, model `{spacy.get('package') or spacy.get('name')}`"
        f" {spacy.get('package_version') or spacy.get('version', '')}, components: {', '.join(spacy.get('components', [])) or '?'}"
    )
    add(f"- Generated {manifest.get('created')}; {len(manifest['shards'])} source shard(s)")
    add("\nResolved generation config:\n")
    add("```yaml\n" + yaml.safe_dump(manifest["config"], sort_keys=False, allow_unicode=True).rstrip() + "\n```\n")

    add("## Licence\n")
    if facts["coco"]:
        add(
            f"This dataset is released under `{cfg.license}`. The positive captions are COCO Captions annotations,"
            " licensed CC BY 4.0 by the COCO Consortium; the negatives are derived from them. The images are not"
            " part of this dataset (Flickr terms of use apply to them).\n"
        )
    else:
        add(f"This dataset is released under `{cfg.license}`. The licence of the source captions ({src['name']})"
            " was not recorded by hardneg: check that it allows this release.\n")

    add("## Citation\n")
    add("```bibtex")
    add(_CECLIP_BIB)
    if facts["coco"]:
        add(_COCO_BIB)
    if facts["karpathy"]:
        add(_KARPATHY_BIB)
    add("```")
    body = "\n".join(L).rstrip() + "\n"
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{front}---\n\n{body}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _report_lines(report: dict[str, Any] | None) -> list[str]:
    if report is None:
        return [
            "The quality report (`hardneg report`) was not run on this dataset, so no blind-check figures"
            " are given: whether a text-only model can tell the negatives from the positives is not measured here."
        ]
    lines = ["Figures from `report.json` written by `hardneg report`.\n"]
    blind = next((report[k] for k in ("blind_check", "blind") if isinstance(report.get(k), dict)), None)
    if blind is not None:
        lines.append(
            "**Blind check**: share of (positive, negative) pairs where a text-only n-gram language model"
            " prefers the positive; 50% means the text alone gives the negative away no better than chance.\n"
        )
        rows = {k: v for k, v in blind.items() if isinstance(v, dict)}
        scalars = {k: v for k, v in blind.items() if not isinstance(v, (dict, list))}
        if rows:
            cols = list(dict.fromkeys(c for v in rows.values() for c, x in v.items() if not isinstance(x, (dict, list))))
            lines.append("| family | " + " | ".join(cols) + " |")
            lines.append("|---|" + "---:|" * len(cols))
            for fam, v in rows.items():
                lines.append(f"| {fam} | " + " | ".join(_fmt(v.get(c)) for c in cols) + " |")
            lines.append("")
        for k, v in scalars.items():
            lines.append(f"- {k}: {_fmt(v)}")
    flat = [(k, v) for k, v in _flatten(report) if not k.startswith(("blind_check.", "blind."))]
    if flat:
        lines.append("\n| figure | value |\n|---|---:|")
        lines.extend(f"| {k} | {_fmt(v)} |" for k, v in flat[:40])
        if len(flat) > 40:
            lines.append(f"\n({len(flat) - 40} more figures in `report.json`.)")
    return lines


def _flatten(d: dict[str, Any], prefix: str = "", depth: int = 0) -> Iterable[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth < 2:
            yield from _flatten(v, key + ".", depth + 1)
        elif isinstance(v, (int, float, str, bool)) or v is None:
            yield key, v


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return _cell(str(v)) if v is not None else ""


_CECLIP_BIB = """@inproceedings{zhang2024contrasting,
  title     = {Contrasting Intra-Modal and Ranking Cross-Modal Hard Negatives to Enhance Visio-Linguistic Compositional Understanding},
  author    = {Zhang, Le and Awal, Rabiul and Agrawal, Aishwarya},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2024}
}"""
_COCO_BIB = """@inproceedings{lin2014microsoft,
  title     = {Microsoft COCO: Common Objects in Context},
  author    = {Lin, Tsung-Yi and Maire, Michael and Belongie, Serge and Hays, James and Perona, Pietro and Ramanan, Deva and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2014}
}"""
_KARPATHY_BIB = """@inproceedings{karpathy2015deep,
  title     = {Deep Visual-Semantic Alignments for Generating Image Descriptions},
  author    = {Karpathy, Andrej and Fei-Fei, Li},
  booktitle = {Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2015}
}"""


# --------------------------------------------------------------------------- upload


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file stored as a regular (non-LFS) file."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _same_as_remote(entry: RepoEntry, remote: Any) -> bool:
    if remote is None or remote.size != entry.size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == entry.sha256
    return remote.blob_id == git_blob_sha1(entry.local)


def plan_commits(entries: list[RepoEntry], max_bytes: int, max_files: int) -> list[list[RepoEntry]]:
    """Data files in bounded commits, in layout order; the card goes in the last one."""
    data = [e for e in entries if e.origin != "card"]
    batches: list[list[RepoEntry]] = []
    current: list[RepoEntry] = []
    size = 0
    for e in data:
        if current and (size + e.size > max_bytes or len(current) >= max_files):
            batches.append(current)
            current, size = [], 0
        current.append(e)
        size += e.size
    if current:
        batches.append(current)
    cards = [e for e in entries if e.origin == "card"]
    if cards:
        if batches:
            batches[-1].extend(cards)
        else:
            batches.append(cards)
    return batches


def upload_layout(layout: Layout, cfg: PublishConfig, manifest: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    """Send what the Hub does not have yet; delete data files the new layout no longer has."""
    try:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
        from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError, RevisionNotFoundError
    except ImportError:
        raise HardnegError("publishing needs huggingface_hub: pip install 'hardneg[publish]'") from None

    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now, so a value set after import counts
    api = HfApi(endpoint=endpoint, token=token)
    repo, rev = cfg.repo_id, cfg.revision
    errors = _hub_errors(HfHubHTTPError)
    try:
        url = api.create_repo(repo, repo_type="dataset", private=cfg.private, exist_ok=True)
        if cfg.private and not api.repo_info(repo, repo_type="dataset").private:
            raise HardnegError(f"{repo} already exists and is public; --private would not make it private."
                               " Change its visibility on the Hub or drop --private")
        if rev and rev != "main":
            api.create_branch(repo, repo_type="dataset", branch=rev, exist_ok=True)
        try:
            remote = {
                f.path: f for f in api.list_repo_tree(repo, repo_type="dataset", revision=rev, recursive=True)
                if getattr(f, "blob_id", None) is not None
            }
        except (RevisionNotFoundError, RemoteEntryNotFoundError):
            remote = {}
        wanted = {e.path for e in layout.entries}
        changed = [e for e in layout.entries if not _same_as_remote(e, remote.get(e.path))]
        stale = sorted(p for p in remote if p.startswith(f"{DATA_DIR}/") and p not in wanted)
        if not changed and not stale:
            log.info("%s%s already holds this dataset; nothing to upload", repo, f"@{rev}" if rev else "")
            return {"url": str(url), "uploaded": [], "deleted": [], "commits": [], "unchanged": True}
        batches = plan_commits(changed, cfg.max_commit_bytes, cfg.max_commit_files) or [[]]
        commits = []
        name = manifest.get("name", "dataset")
        for i, batch in enumerate(batches, 1):
            ops: list[Any] = []
            for e in batch:
                op = CommitOperationAdd(path_in_repo=e.path, path_or_fileobj=str(e.local))
                try:  # we hashed it already; spare huggingface_hub a second read of a large file
                    op.upload_info.sha256 = bytes.fromhex(e.sha256)
                except AttributeError:
                    pass
                ops.append(op)
            if i == len(batches):
                ops.extend(CommitOperationDelete(path_in_repo=p) for p in stale)
            part = f" (part {i}/{len(batches)})" if len(batches) > 1 else ""
            log.info("commit %d/%d: %d file(s), %.1f MB%s", i, len(batches), len(batch),
                     sum(e.size for e in batch) / 1e6, f", deleting {len(stale)} stale file(s)" if i == len(batches) and stale else "")
            info = api.create_commit(
                repo, ops, repo_type="dataset", revision=rev,
                commit_message=f"hardneg publish {name}{part}",
                commit_description=f"config hash {manifest.get('config_hash')}, hardneg {manifest.get('hardneg_version')}",
            )
            commits.append(info.oid)
    except HardnegError:
        raise
    except errors as e:
        raise HardnegError(
            f"upload to {repo} failed: {e}. Commits already made are kept; rerun the same command to resume"
        ) from e
    log.info("published %d file(s) to %s in %d commit(s)", len(changed), url, len(commits))
    return {
        "url": str(url),
        "uploaded": [e.path for e in changed],
        "deleted": stale,
        "commits": commits,
        "unchanged": False,
    }


def _hub_errors(http_error: type[Exception]) -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [http_error, OSError, ValueError]
    for mod in ("httpx2", "httpx", "requests"):
        try:
            errors.append(__import__(mod).HTTPError if mod != "requests" else __import__(mod).RequestException)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


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


# --------------------------------------------------------------------------- CLI
