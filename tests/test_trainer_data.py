"""Streaming shards: coverage per epoch, rank/worker splits, resume position, negatives, bad images."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from support.shards import FAMILIES, shape_image, shapes_dataset, shapes_rows, write_shard

from pipeline.core.errors import ConfigError, SourceError
from pipeline.records import CaptionRecord
from pipeline.rules.builder import to_row
from trainer.data import (
    ImageSkip,
    ImageSpec,
    NegativeStream,
    ShardIndex,
    decode_image,
    load_image,
    make_loader,
    normalize_images,
    pick_negative,
)

SPEC = ImageSpec(64, 64, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


class Tok:
    """A stand-in tokenizer: one token per word (hashed), context 8; keeps these tests torch-light."""

    def __call__(self, texts):
        out = torch.zeros((len(texts), 8), dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [1 + sum(map(ord, w)) % 1000 for w in t.split()][:8]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def stream(index, **kw):
    args = dict(tokenizer=Tok(), spec=SPEC, batch_size=4, families=FAMILIES, seed=3, shuffle_buffer=8)
    args.update(kw)
    return NegativeStream(index, **args)


def epoch_ids(s: NegativeStream, epoch: int, workers: int = 0, start: int = 0) -> list[list[str]]:
    s.set_position(epoch, start)
    if workers:
        return [b["ids"] for b in make_loader(s, workers)]
    return [b["ids"] for b in s]


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    # 40 rows in 3 shards, row groups of 6 rows (so shards and groups end mid-batch)
    return shapes_dataset(tmp_path_factory.mktemp("ds"), 40, shards=3, row_group_size=6)


def test_index_reads_footers_and_finds_split_dir(ds):
    index = ShardIndex.from_paths([str(ds)], "train")
    assert [Path(f.path).name for f in index.files] == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    assert index.num_rows == 40
    assert [f.row_groups for f in index.files] == [[6, 6, 2], [6, 6, 2], [6, 6]]
    glob = ShardIndex.from_paths([str(ds / "train" / "shard-0000[01].parquet")])
    assert glob.num_rows == 28
    url = ShardIndex.from_paths([f"file://{ds}/train/*.parquet"])
    assert url.num_rows == 40 and url.files[0].fs == 0


def test_index_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ShardIndex.from_paths([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no Parquet shards"):
        ShardIndex.from_paths([str(tmp_path / "empty")])
    pq.write_table(pa.table({"id": ["a"], "caption": ["a cat"]}), tmp_path / "plain.parquet")
    with pytest.raises(SourceError, match="not a hardneg shard"):
        ShardIndex.from_paths([str(tmp_path / "plain.parquet")])


@pytest.mark.parametrize("world", [1, 2, 3])
def test_each_sample_once_per_epoch_across_ranks(ds, world):
    index = ShardIndex.from_paths([str(ds)], "train")
    seen: list[str] = []
    for rank in range(world):
        s = stream(index, rank=rank, world_size=world, drop_last=False)
        seen += [i for b in epoch_ids(s, 0) for i in b]
    assert sorted(seen) == [f"s{i:05d}" for i in range(40)]
    # ranks get 40 // world rows or one more
    sizes = [stream(index, rank=r, world_size=world).rank_rows() for r in range(world)]
    assert sum(sizes) == 40 and max(sizes) - min(sizes) <= 1


def test_drop_last_and_batches_per_epoch(ds):
    index = ShardIndex.from_paths([str(ds)], "train")
    s = stream(index, rank=1, world_size=3)  # rows 13..26 -> 13 rows -> 3 full batches of 4
    batches = epoch_ids(s, 0)
    assert [len(b) for b in batches] == [4, 4, 4]
    assert s.batches_per_epoch() == 3  # smallest rank: 40 // 3 = 13 rows


def test_order_is_seeded_and_changes_per_epoch(ds):
    index = ShardIndex.from_paths([str(ds)], "train")
    a0, a1 = epoch_ids(stream(index), 0), epoch_ids(stream(index), 1)
    assert epoch_ids(stream(index), 0) == a0
    assert a0 != a1
    assert sorted(i for b in a0 for i in b) == sorted(i for b in a1 for i in b)
    assert epoch_ids(stream(index, seed=4), 0) != a0


def test_shuffle_window_mixes_row_groups(ds):
    index = ShardIndex.from_paths([str(ds)], "train")
    s = stream(index, shuffle_buffer=12)
    pieces, piece_of, _ = s.epoch_plan(0)
    # windows of >= 12 rows are whole row groups: 6+6, 6+6, ...; each window mixes both groups
    first = piece_of[:12]
    assert sorted(set(first.tolist())) == [0, 1]
    assert first.tolist() != sorted(first.tolist())


def test_batches_do_not_depend_on_worker_count(ds):
    index = ShardIndex.from_paths([str(ds)], "train")
    single = epoch_ids(stream(index), 2)
    assert epoch_ids(stream(index), 2, workers=2) == single


def test_resume_position_continues_the_same_sequence(ds):
    index = ShardIndex.from_paths([str(ds)], "train")
    full = epoch_ids(stream(index), 1)
    assert epoch_ids(stream(index), 1, start=3) == full[3:]
    assert epoch_ids(stream(index), 1, workers=2, start=3) == full[3:]
    # persistent workers read the position from shared memory at each new iteration
    s = stream(index)
    loader = make_loader(s, 2)
    s.set_position(1, 0)
    assert [b["ids"] for b in loader] == full
    s.set_position(1, 5)
    assert [b["ids"] for b in loader] == full[5:]


def test_negatives_one_per_family_with_mask(ds):
    index = ShardIndex.from_paths([str(ds)], "train")
    batch = next(iter(stream(index, augment=False)))
    tok = Tok()
    by_id = {r["id"]: r for r in shapes_rows(40)}
    for j, sid in enumerate(batch["ids"]):
        row = by_id[sid]
        # relation_swap is empty in the fixture: masked and all-zero tokens
        assert batch["neg_mask"][j].tolist() == [False, True, True]
        assert torch.equal(batch["neg_text"][j, 0], torch.zeros(8, dtype=torch.long))
        for k, fam in enumerate(FAMILIES[1:], start=1):
            chosen = pick_negative(row[fam], 3, 0, sid, fam)
            assert chosen in row[fam]
            assert torch.equal(batch["neg_text"][j, k], tok([chosen])[0])
        assert torch.equal(batch["text"][j], tok([row["caption"]])[0])
    assert batch["images"].dtype == torch.uint8 and batch["images"].shape == (4, 3, 64, 64)


def test_pick_negative_is_stable_and_varies_over_epochs():
    cands = ["a red square", "a blue square", "a green square", "a yellow square"]
    picks = [pick_negative(cands, 0, e, "s1", "attribute_replace") for e in range(12)]
    assert picks == [pick_negative(cands, 0, e, "s1", "attribute_replace") for e in range(12)]
    assert len(set(picks)) > 1
    assert pick_negative([], 0, 0, "s1", "x") is None
    assert pick_negative(["", None], 0, 0, "s1", "x") is None
    assert pick_negative(["only"], 0, 5, "s9", "x") == "only"


def _record(i: int, *, data: bytes | None = None, path: str | None = None) -> dict:
    rec = CaptionRecord(id=f"b{i}", caption="a red circle", image_path=path, source="t", split="train",
                        group=f"b{i}", image_bytes=data)
    return to_row(rec, {})


def test_missing_corrupt_and_absent_images_are_counted_and_skipped(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "ok.png").write_bytes(shape_image("red", "circle"))
    good = shape_image("blue", "square", fmt="JPEG")
    rows = [
        _record(0, data=good),
        _record(1, data=b"\xff\xd8\xff\xe0 this is not a jpeg"),
        _record(2, path="missing.png"),
        _record(3),
        _record(4, path="ok.png"),
        _record(5, data=good[: len(good) // 3]),  # truncated JPEG
    ]
    write_shard(tmp_path / "d" / "train" / "a.parquet", rows)
    index = ShardIndex.from_paths([str(tmp_path / "d")], "train")
    s = stream(index, batch_size=6, image_root=str(root), shuffle_buffer=1, augment=False)
    batch = next(iter(s))
    assert sorted(batch["ids"]) == ["b0", "b4"]
    assert batch["skipped"] == {"missing": 1, "corrupt": 2, "no_image": 1}
    assert batch["rows"] == 6
    assert batch["images"].shape == (2, 3, 64, 64)
    assert batch["neg_mask"].shape == (2, 3) and not batch["neg_mask"].any()


def _photo_jpeg(w: int, h: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_draft_keeps_at_least_target_resolution():
    data = _photo_jpeg(640, 480)
    img = Image.open(io.BytesIO(data))
    fast = decode_image(img, SPEC, draft=True)
    # 480 / 64 = 7.5 -> scale 1/4 (1/8 would give 60 < 64 rows)
    assert img.size == (160, 120)
    slow = decode_image(Image.open(io.BytesIO(data)), SPEC, draft=False)
    assert fast.shape == slow.shape == (64, 64, 3)
    assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 3.0


def test_validation_decode_matches_open_clip_preprocess():
    from open_clip.transform import PreprocessCfg, image_transform_v2

    data = _photo_jpeg(200, 150, seed=1)
    ours = normalize_images(torch.from_numpy(decode_image(Image.open(io.BytesIO(data)), SPEC, draft=False).copy())
                            .permute(2, 0, 1)[None], SPEC)[0]
    ref = image_transform_v2(PreprocessCfg(size=64), is_train=False)(Image.open(io.BytesIO(data)))
    assert ours.shape == ref.shape
    # same resize and crop up to sub-pixel rounding; normalised units (std ~0.27 -> 1/255 ~ 0.015)
    assert (ours - ref).abs().mean().item() < 0.05


def test_random_crop_is_seeded_per_sample():
    data = shape_image("green", "triangle")
    a = load_image({"bytes": data}, None, SPEC, random.Random(1), (0.5, 1.0))
    b = load_image({"bytes": data}, None, SPEC, random.Random(1), (0.5, 1.0))
    c = load_image({"bytes": data}, None, SPEC, random.Random(2), (0.5, 1.0))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_open_image_reasons(tmp_path):
    with pytest.raises(ImageSkip) as e:
        load_image({"path": "x.png"}, str(tmp_path), SPEC)
    assert e.value.reason == "missing"
    with pytest.raises(ImageSkip) as e:
        load_image({"bytes": b"GIF89a broken"}, None, SPEC)
    assert e.value.reason == "corrupt"
    with pytest.raises(ImageSkip) as e:
        load_image(None, None, SPEC)
    assert e.value.reason == "no_image"


def test_spread_groups_hand_example():
    from trainer.data import spread_groups

    # groups 0 0 1 1 2 2, batches of 2: row 1 waits for the next batch, row 5 for the one after
    assert spread_groups(np.array([0, 0, 1, 1, 2, 2]), 2).tolist() == [0, 2, 1, 3, 4, 5]
    assert spread_groups(np.array([3, 1, 2]), 2).tolist() == [0, 1, 2]
    order = spread_groups(np.repeat(np.arange(10), 5), 8)
    assert sorted(order.tolist()) == list(range(50))


def test_captions_of_one_image_are_kept_out_of_one_batch(tmp_path):
    # five captions per image in neighbouring rows, as COCO shards have them
    rows = shapes_rows(60)
    for i, r in enumerate(rows):
        r["group"] = f"img{i // 5}"
    write_shard(tmp_path / "d" / "train" / "a.parquet", rows, row_group_size=10)
    index = ShardIndex.from_paths([str(tmp_path / "d")], "train")
    group_of = {r["id"]: r["group"] for r in rows}
    spread = epoch_ids(stream(index, batch_size=6, shuffle_buffer=20), 0)
    assert sorted(i for b in spread for i in b) == sorted(group_of)
    def clashes(batches):
        return [len(b) - len({group_of[i] for i in b}) for b in batches]

    # only the tail of the epoch, where the last few images' captions are all that is left, can clash
    assert clashes(spread)[:-2] == [0] * 8
    # without spreading, a 20-row window of 4 images puts same-image captions together throughout
    plain = epoch_ids(stream(index, batch_size=6, shuffle_buffer=20, spread_groups=False), 0)
    assert sum(clashes(plain)[:-2]) > 8
    assert epoch_ids(stream(index, batch_size=6, shuffle_buffer=20), 0, workers=2) == spread


def test_many_shards_do_not_exhaust_file_handles(tmp_path):
    import resource

    ds = shapes_dataset(tmp_path, 200, shards=100, row_group_size=2)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(64, hard), hard))
    try:
        index = ShardIndex.from_paths([str(ds)])
        assert len(index.files) == 100
        assert sum(1 for _ in index.iter_rows(["id"])) == 200
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
