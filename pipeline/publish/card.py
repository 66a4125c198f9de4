"""The dataset card (``README.md``) of a published dataset: Hub metadata plus a page rendered from a template.

The YAML front matter is a ``huggingface_hub`` :class:`DatasetCardData` (licence, tasks, size bucket,
the ``configs`` that map files to splits, and ``dataset_info`` whose ``features`` are derived from
the shard schema's Arrow fields). The page is ``card.md.j2`` (jinja2) filled from a plain context
that this module builds from the manifest, the layout and the quality report; every figure comes
from one of those three, never from a constant. Unknown template names fail (``StrictUndefined``).
"""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from pipeline.core.errors import HardnegError
from pipeline.publish.config import PublishConfig
from pipeline.publish.layout import DATA_DIR, Layout

if TYPE_CHECKING:
    from pipeline.contract.manifest import Manifest

TEMPLATE = "card.md.j2"

FAMILY_DESCRIPTIONS = {
    "relation_swap": "exchanges the two arguments of a relation (who does what to whom)",
    "attribute_swap": "exchanges the attributes of two objects",
    "object_swap": "exchanges two object nouns",
    "relation_replace": "replaces a relation with a contrasting one (on -> under)",
    "attribute_replace": "replaces an attribute with another of the same kind (red -> blue)",
    "object_replace": "replaces an object with a sibling of its category (dog -> cat)",
}
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
_TAGS = ["hard-negatives", "compositionality", "vision-language", "clip", "ce-clip", "hardneg"]
#: sections of ``report.json`` shown as per-family tables: (key, title, what the share means)
_REPORT_CHECKS = (
    ("blind_check", "Blind check",
     "share of (positive, negative) pairs where a text-only n-gram language model prefers the positive;"
     " 50% means the text alone gives the negative away no better than chance."),
    ("blind", "Blind check",
     "share of (positive, negative) pairs where a text-only n-gram language model prefers the positive;"
     " 50% means the text alone gives the negative away no better than chance."),
    ("learned_check", "Learned text-only detector",
     "held-out accuracy of a classifier (logistic regression over word n-grams) trained on some image"
     " groups to tell which of (caption, negative) is the positive, scored on other groups; 50% means"
     " no text shortcut was found."),
)
#: at most this many other report figures are listed
_MAX_FIGURES = 40


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


def card_data(manifest: Manifest, layout: Layout, cfg: PublishConfig) -> Any:
    """The card's front matter as a :class:`huggingface_hub.DatasetCardData`."""
    from huggingface_hub import DatasetCardData

    by_split = layout.split_entries()
    splits = [
        {"name": s, "num_bytes": sum(e.data_bytes for e in es), "num_examples": sum(e.rows for e in es)}
        for s, es in by_split.items()
    ]
    return DatasetCardData(
        license=cfg.license,
        language=["en"],
        pretty_name=cfg.pretty_name or pretty_name(manifest),
        task_categories=list(cfg.task_categories),
        size_categories=[size_category(sum(e.rows for e in layout.entries))],
        annotations_creators=["machine-generated"],
        source_datasets=["extended"],
        tags=list(_TAGS),
        configs=[{
            "config_name": "default",
            "data_files": [{"split": s, "path": f"{DATA_DIR}/{s}-*-of-{len(es):05d}.parquet"} for s, es in by_split.items()],
        }],
        dataset_info={
            "config_name": "default",
            "features": features_yaml(),
            "splits": splits,
            "download_size": sum(e.size for e in layout.entries if e.split is not None),
            "dataset_size": sum(sp["num_bytes"] for sp in splits),
        },
    )


def pretty_name(manifest: Manifest) -> str:
    return f"hardneg negatives: {manifest.name or manifest.source.name}"


def source_facts(manifest: Manifest, dataset_dir: Path) -> dict[str, Any]:
    """What is known about the source's licence and images (COCO is recognised; others are not)."""
    src = manifest.source
    text = " ".join(str(v or "") for v in (src.name, src.path, src.format)).lower()
    first_path = _first_image_path(dataset_dir)
    coco = "coco" in text or bool(first_path and re.match(r"^(train|val|test)201[47]/", first_path))
    return {"coco": coco, "karpathy": coco and "karpathy" in text, "first_image_path": first_path}


#: eval splits, in order of preference
_EVAL_SPLITS = ("test", "val", "validation", "dev")
#: the folder the card's commands expect the images in (relative to where they run), per kind of source
IMAGES_DIR = {"coco": "coco", "other": "images"}
WEIGHTS = "final/open_clip_pytorch_model.bin"


def image_folders(dataset_dir: Path) -> dict[str, list[tuple[str, int]]]:
    """Per split, the top folders of the rows' image paths (``train2014``, ``val2014``) and their rows;
    read from the ``image.path`` column only, so embedded bytes are not read."""
    import pyarrow.parquet as pq

    from pipeline.contract.schema import IMAGE
    from pipeline.contract.shards import list_shards

    out: dict[str, list[tuple[str, int]]] = {}
    for split, files in list_shards(dataset_dir).items():
        counts: Counter[str] = Counter()
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=65536, columns=[f"{IMAGE}.path"]):
                column = batch.column(0)  # struct<path>: the image struct with only its path read
                for path in column.field("path").to_pylist():
                    counts[path.split("/", 1)[0] + "/" if path and "/" in path else "(no folder)"] += 1
        out[split] = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return out


def synth_world(manifest: Manifest) -> dict[str, Any] | None:
    """The ``world.json`` of a ``hardneg synth`` world the source was read from, when it is at hand
    (the source path as recorded, from where ``publish`` runs); None otherwise."""
    root = Path(manifest.source.path) if manifest.source.path else None
    if root is None or not (root / "world.json").is_file():
        return None
    try:
        world = json.loads((root / "world.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(world, dict) or not isinstance(world.get("config"), dict):
        return None
    return world


def synth_command(world: dict[str, Any], out: str) -> str:
    """``hardneg synth`` with the world's settings, writing its images as files under ``out``
    (``<out>/<split>/<n>.png``, the paths its rows name), one setting per line."""
    import yaml

    fixed = {"embed_images": False, "recognition_per_class": 0}
    sets = [f"{k}={_flow(yaml, v)}" for k, v in sorted(world["config"].items()) if k not in fixed]
    sets += [f"{k}={_flow(yaml, v)}" for k, v in fixed.items()]
    return " \\\n    ".join([f"hardneg synth --out {out}", *(f"--set {shlex.quote(x)}" for x in sets)])


def _flow(yaml: Any, value: Any) -> str:
    return str(yaml.safe_dump(value, default_flow_style=True, width=10_000)).strip().removesuffix("...").strip()


def usage_commands(repo_id: str, splits: list[str], image_dir: str | None) -> dict[str, Any]:
    """The card's ``hardneg train`` / ``hardneg eval`` command lines on a local copy of the repository
    (a folder named after it), with ``--image-root image_dir`` when the images are not included."""
    local = repo_id.split("/", 1)[-1]
    train = "train" if "train" in splits else (splits[0] if splits else "train")
    evals = [s for s in _EVAL_SPLITS if s in splits] or [s for s in splits if s != train] or [train]
    root = f" --image-root {image_dir}" if image_dir else ""
    run = f"runs/{local}"
    split_flag = f" --split {train}" if train != "train" else ""
    return {
        "local_dir": local,
        "train_split": train,
        "eval_split": evals[0],
        "train": f"hardneg train --data {local}{split_flag}{root} -o {run}",
        "eval": f"hardneg eval --shards {local} --split {evals[0]}{root} --pretrained {run}/{WEIGHTS} -o {run}/eval.json",
        "stream_flags": f"{split_flag}{root} -o {run}",
    }


def _first_image_path(dataset_dir: Path) -> str | None:
    from pipeline.contract.dataset import iter_rows
    from pipeline.contract.schema import IMAGE

    for row in iter_rows(dataset_dir, [IMAGE]):
        return (row[IMAGE] or {}).get("path")
    return None


# --------------------------------------------------------------------------- the page


def render_card(manifest: Manifest, layout: Layout, report: dict[str, Any] | None, cfg: PublishConfig, dataset_dir: Path) -> str:
    """The whole ``README.md``: front matter and page."""
    try:
        import jinja2  # noqa: F401
        from huggingface_hub import DatasetCard
    except ImportError:
        raise HardnegError("the dataset card needs huggingface_hub and jinja2: pip install 'hardneg[publish]'") from None

    data = card_data(manifest, layout, cfg)
    text = _environment().get_template(TEMPLATE).render(
        card_data=data.to_yaml(), **card_context(manifest, layout, report, cfg, dataset_dir, data)
    )
    return str(DatasetCard(text))


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.publish", ""),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML; table cells are escaped by the `cell` filter
    )
    env.filters.update(cell=cell, num=lambda n: f"{n:,}", pct=lambda x: f"{100 * x:.1f}%", figure=figure)
    return env


def card_context(
    manifest: Manifest, layout: Layout, report: dict[str, Any] | None, cfg: PublishConfig, dataset_dir: Path, data: Any,
) -> dict[str, Any]:
    """Everything the template shows, as plain values."""
    import yaml

    from pipeline.contract.dataset import summarize

    facts = source_facts(manifest, dataset_dir)
    by_split = layout.split_entries()
    images_included = layout.images_included
    world = None if images_included or facts["coco"] else synth_world(manifest)
    image_dir = None if images_included else IMAGES_DIR["coco" if facts["coco"] else "other"]
    folders = image_folders(dataset_dir) if facts["coco"] and not images_included else {}
    examples = summarize(dataset_dir, examples=cfg.examples_per_family, seed=0)["families"]
    spacy = manifest.spacy
    rev = cfg.revision
    return {
        "pretty_name": data.pretty_name,
        "source": manifest.source,
        "rows": sum(sp["num_examples"] for sp in data.dataset_info["splits"]),
        "hardneg_version": manifest.hardneg_version,
        "splits": [{"name": s, "rows": sum(e.rows for e in es), "files": len(es)} for s, es in by_split.items()],
        "images_included": images_included,
        "images_left_out": layout.embeds_images and not images_included,
        "image_dir": image_dir,
        "image_folders": folders,
        "folder_names": sorted({f for fs in folders.values() for f, _ in fs if f.endswith("/")}),
        "synth": None if world is None else {
            "config_hash": world.get("config_hash", "?"),
            "seed": world["config"].get("seed", "?"),
            "path": manifest.source.path,
            "command": synth_command(world, image_dir or IMAGES_DIR["other"]),
        },
        "commands": usage_commands(cfg.repo_id, list(by_split), image_dir),
        "k": manifest.config.get("k"),
        "families": manifest.families,
        "descriptions": FAMILY_DESCRIPTIONS,
        "not_generated": [f for f in FAMILY_DESCRIPTIONS if f not in manifest.families],
        "skipped_total": manifest.skipped_total,
        "skipped": manifest.skipped,
        "examples": {f: examples.get(f, {}).get("examples", []) for f in manifest.families},
        "report": report_summary(report),
        "coco": facts["coco"],
        "karpathy": facts["karpathy"],
        "first_image_path": facts["first_image_path"] or "val2014/...jpg",
        "repo_id": cfg.repo_id,
        "revision": rev,
        "first_split": next(iter(by_split), "train"),
        "hf_url": f"hf://datasets/{cfg.repo_id}" + (f"@{rev}" if rev else ""),
        "manifest": manifest,
        "spacy_line": (
            f"spaCy {spacy.spacy_version or '?'}, model `{spacy.package or spacy.name}`"
            f" {spacy.package_version or spacy.version}, components: {', '.join(spacy.components) or '?'}"
        ),
        "config_yaml": yaml.safe_dump(manifest.config, sort_keys=False, allow_unicode=True).rstrip(),
        "license": cfg.license,
        "bibtex": [_CECLIP_BIB, *([_COCO_BIB] if facts["coco"] else []), *([_KARPATHY_BIB] if facts["karpathy"] else [])],
    }


def report_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The quality report as tables: one per check (a row per family, its scalar columns in the
    report's order, then the check's settings), and the other figures flattened (``a.b.c``)."""
    if report is None:
        return None
    checks = []
    shown = set()
    for key, title, meaning in _REPORT_CHECKS:
        section = report.get(key)
        if not isinstance(section, dict):
            continue
        shown.add(key)
        if title in {c["title"] for c in checks}:  # "blind" is the older name of "blind_check"
            continue
        rows = {k: v for k, v in section.items() if isinstance(v, dict)}
        columns = list(dict.fromkeys(c for v in rows.values() for c, x in v.items() if not isinstance(x, (dict, list))))
        checks.append({
            "title": title,
            "meaning": meaning,
            "columns": columns,
            "rows": [(fam, [v.get(c) for c in columns]) for fam, v in rows.items()],
            "settings": [(k, v) for k, v in section.items() if not isinstance(v, (dict, list))],
        })
    flat = [(k, v) for k, v in _flatten(report) if k.split(".", 1)[0] not in shown]
    return {"checks": checks, "figures": flat[:_MAX_FIGURES], "more_figures": max(0, len(flat) - _MAX_FIGURES)}


def _flatten(d: dict[str, Any], prefix: str = "", depth: int = 0) -> Iterable[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth < 2:
            yield from _flatten(v, key + ".", depth + 1)
        elif isinstance(v, (int, float, str, bool)) or v is None:
            yield key, v


def cell(text: Any) -> str:
    """Text made safe for one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def figure(v: Any) -> str:
    """A report figure: 4 significant digits for shares, thousands separators for counts."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return cell(v) if v is not None else ""


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
