"""Caption readers: exact records per format, every skip class, every SourceError case, fingerprints."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import sources as sources_mod
from pipeline.config import SourceConfig
from pipeline.core.errors import ConfigError, SourceError
from pipeline.records import CaptionRecord, Skip
from pipeline.sources import SourcePart, detect_format, fingerprint, iter_source, source_name, source_parts

# real COCO captions (val2014 image 391895 and 522418, train2014 image 318556)
SURF = "A man riding a wave on top of a surfboard."
MOPED = "A man with a red helmet on a small moped on a dirt road."
BIKE = "Man riding a motor bike on a dirt road on the countryside."
KNIFE = "A woman wearing a net on her head cutting a cake."
KNIFE2 = "A woman cutting a large white sheet cake."
SINK = "A very clean and well decorated empty bathroom"

PNG_BYTES = b"\x89PNG\r\n\x1a\n-not-really-an-image-but-bytes-are-kept"


def read(path: Path | str, **kw) -> list[CaptionRecord | Skip]:
    return list(iter_source(SourceConfig(path=str(path), **kw)))


def records(items) -> list[CaptionRecord]:
    return [i for i in items if isinstance(i, CaptionRecord)]


def skips(items) -> list[tuple[str, str]]:
    return [(i.reason, i.where) for i in items if isinstance(i, Skip)]


def write_json(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ COCO


def coco_doc() -> dict:
    return {
        "info": {"description": "COCO 2014"},
        "images": [
            {"id": 318556, "file_name": "COCO_train2014_000000318556.jpg", "height": 480},
            {"id": 116100, "file_name": "COCO_train2014_000000116100.jpg"},
        ],
        "annotations": [
            {"id": 48, "image_id": 318556, "caption": SINK},
            {"id": 67, "image_id": 116100, "caption": "  A panoramic view of a kitchen and all of its appliances. \n"},
            {"id": 126, "image_id": 318556, "caption": "A blue and white bathroom with butterfly themed wall tiles."},
        ],
    }


def test_coco_train_file(tmp_path: Path) -> None:
    path = write_json(tmp_path / "annotations" / "captions_train2014.json", coco_doc())
    items = read(path)
    assert items == [
        CaptionRecord("coco-48", SINK, "train2014/COCO_train2014_000000318556.jpg",
                      "captions_train2014", "train", "318556"),
        CaptionRecord("coco-67", "A panoramic view of a kitchen and all of its appliances.",
                      "train2014/COCO_train2014_000000116100.jpg", "captions_train2014", "train", "116100"),
        CaptionRecord("coco-126", "A blue and white bathroom with butterfly themed wall tiles.",
                      "train2014/COCO_train2014_000000318556.jpg", "captions_train2014", "train", "318556"),
    ]
    assert detect_format(str(path)) == "coco"
    assert read(path, format="coco") == items


def test_coco_val_file_and_split_override(tmp_path: Path) -> None:
    doc = {
        "images": [{"id": 391895, "file_name": "COCO_val2014_000000391895.jpg"}],
        "annotations": [{"id": 770337, "image_id": 391895, "caption": MOPED}],
    }
    path = write_json(tmp_path / "captions_val2014.json", doc)
    (rec,) = read(path)
    assert (rec.id, rec.image_path, rec.split, rec.group) == (
        "coco-770337", "val2014/COCO_val2014_000000391895.jpg", "val", "391895")
    (rec,) = read(path, split="minival", name="coco")
    assert (rec.split, rec.source) == ("minival", "coco")


def test_coco_unknown_image_is_no_image_skip(tmp_path: Path) -> None:
    doc = coco_doc()
    doc["annotations"].append({"id": 200, "image_id": 999, "caption": SURF})
    path = write_json(tmp_path / "captions_train2014.json", doc)
    assert skips(read(path)) == [("no_image", f"{path}:record 3")]


# ------------------------------------------------------------------------------------ Karpathy


def test_karpathy_list(tmp_path: Path) -> None:
    data = [
        {"image": "val2014/COCO_val2014_000000391895.jpg", "caption": [MOPED, BIKE]},
        {"image": "val2014/COCO_val2014_000000522418.jpg", "caption": KNIFE, "image_id": 522418},
        # one caption per record: the counter runs per image, so ids stay unique
        {"image": "val2014/COCO_val2014_000000522418.jpg", "caption": KNIFE2},
    ]
    path = write_json(tmp_path / "coco_karpathy_test.json", data)
    assert detect_format(str(path)) == "karpathy"
    items = read(path)
    img1, img2 = "val2014/COCO_val2014_000000391895.jpg", "val2014/COCO_val2014_000000522418.jpg"
    assert items == [
        CaptionRecord("COCO_val2014_000000391895#0", MOPED, img1, "coco_karpathy_test", "test", img1),
        CaptionRecord("COCO_val2014_000000391895#1", BIKE, img1, "coco_karpathy_test", "test", img1),
        CaptionRecord("COCO_val2014_000000522418#0", KNIFE, img2, "coco_karpathy_test", "test", img2),
        CaptionRecord("COCO_val2014_000000522418#1", KNIFE2, img2, "coco_karpathy_test", "test", img2),
    ]
    assert read(path, format="karpathy") == items


def test_karpathy_original_dataset_coco(tmp_path: Path) -> None:
    doc = {
        "dataset": "coco",
        "images": [
            {"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg", "split": "test",
             "sentences": [{"raw": MOPED, "tokens": ["a"]}, {"raw": BIKE}], "cocoid": 391895},
            {"filepath": "val2014", "filename": "COCO_val2014_000000522418.jpg", "split": "restval",
             "sentences": [{"raw": KNIFE}], "cocoid": 522418},
            {"filepath": "train2014", "filename": "COCO_train2014_000000318556.jpg", "split": "val",
             "sentences": [{"raw": SINK}], "cocoid": 318556},
        ],
    }
    path = write_json(tmp_path / "dataset_coco.json", doc)
    assert detect_format(str(path)) == "karpathy"
    items = read(path)
    assert [(r.id, r.image_path, r.split, r.group) for r in items] == [
        ("COCO_val2014_000000391895#0", "val2014/COCO_val2014_000000391895.jpg", "test",
         "val2014/COCO_val2014_000000391895.jpg"),
        ("COCO_val2014_000000391895#1", "val2014/COCO_val2014_000000391895.jpg", "test",
         "val2014/COCO_val2014_000000391895.jpg"),
        ("COCO_val2014_000000522418#0", "val2014/COCO_val2014_000000522418.jpg", "train",
         "val2014/COCO_val2014_000000522418.jpg"),
        ("COCO_train2014_000000318556#0", "train2014/COCO_train2014_000000318556.jpg", "val",
         "train2014/COCO_train2014_000000318556.jpg"),
    ]
    # a per-image split is selected by cfg.split, never overwritten
    assert [r.caption for r in read(path, split="test")] == [MOPED, BIKE]
    assert [r.id for r in read(path, id_column="cocoid", split="train")] == ["522418#0"]


# ------------------------------------------------------------------------------------ csv / tsv


def test_csv_default_columns(tmp_path: Path) -> None:
    path = tmp_path / "cc_subset.csv"
    path.write_text(
        "image,caption,extra\n"
        f"val2014/a.jpg,{SURF},x\n"
        f'val2014/b.jpg,"{MOPED}",y\n',
        encoding="utf-8",
    )
    items = read(path)
    assert items == [
        CaptionRecord("cc_subset:0", SURF, "val2014/a.jpg", "cc_subset", "train", "val2014/a.jpg"),
        CaptionRecord("cc_subset:1", MOPED, "val2014/b.jpg", "cc_subset", "train", "val2014/b.jpg"),
    ]
    assert detect_format(str(path)) == "csv"


def test_tsv_open_clip_columns_fallback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "val_pairs.tsv"
    path.write_bytes(
        "\ufefffilepath\ttitle\n"  # Excel-style BOM must not hide the first column name
        f"images/1.jpg\t{SURF}\n"
        f"images/2.jpg\t{KNIFE}\n".encode()
    )
    with caplog.at_level(logging.INFO, logger="pipeline.sources"):
        items = read(path)
    assert [(r.id, r.image_path, r.caption, r.split) for r in items] == [
        ("val_pairs:0", "images/1.jpg", SURF, "val"),
        ("val_pairs:1", "images/2.jpg", KNIFE, "val"),
    ]
    assert "using open_clip's 'filepath'" in caplog.text
    assert "using open_clip's 'title'" in caplog.text


def test_csv_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text(f"url,text\nhttp://x/a.jpg,{SURF}\n", encoding="utf-8")
    with pytest.raises(SourceError) as e:
        read(path)
    assert str(path) in str(e.value)
    assert "['image', 'caption']" in str(e.value) and "['url', 'text']" in str(e.value)
    # naming the columns fixes it
    (rec,) = read(path, image_column="url", caption_column="text")
    assert (rec.image_path, rec.caption) == ("http://x/a.jpg", SURF)


def test_csv_skips(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        b"image,caption\n"
        b"a.jpg,   \n"  # line 2: whitespace only
        b"b.jpg,A dog \xff\xfe on a couch\n"  # line 3: not UTF-8
        b",A cat sleeping on a laptop.\n"  # line 4: no image
        b"c.jpg\n"  # line 5: caption field absent
        + f"d.jpg,{SURF}\n".encode()
    )
    items = read(path)
    assert skips(items) == [
        ("empty", f"{path}:2"),
        ("invalid_utf8", f"{path}:3"),
        ("no_image", f"{path}:4"),
        ("not_string", f"{path}:5"),
    ]
    assert [(r.id, r.caption) for r in records(items)] == [("mixed:4", SURF)]


# ------------------------------------------------------------------------------------ jsonl


def test_jsonl_with_lists_and_skips(tmp_path: Path) -> None:
    path = tmp_path / "caps.jsonl"
    lines = [
        json.dumps({"image": "val2014/a.jpg", "caption": [MOPED, "  " + BIKE + "  "]}).encode(),
        b"",  # blank lines are not rows
        json.dumps({"image": "val2014/b.jpg", "caption": 42}).encode(),
        json.dumps({"image": "val2014/b.jpg", "caption": None}).encode(),
        json.dumps({"image": "val2014/b.jpg", "caption": {"text": SURF}}).encode(),
        b'{"image": "val2014/b.jpg", "caption": "A kitchen \xc3\x28 with a stove"}',
        json.dumps({"image": "", "caption": SURF}).encode(),
        json.dumps({"caption": SURF, "image": None}).encode(),
        json.dumps({"image": "val2014/c.jpg", "caption": ["", KNIFE, 7]}).encode(),
        json.dumps({"image": "val2014/d.jpg", "caption": []}).encode(),
        json.dumps({"image": "val2014/e.jpg", "caption": "A  man riding\ta wave."}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    items = read(path)
    assert skips(items) == [
        ("not_string", f"{path}:3"),
        ("not_string", f"{path}:4"),
        ("not_string", f"{path}:5"),
        ("invalid_utf8", f"{path}:6"),
        ("no_image", f"{path}:7"),
        ("no_image", f"{path}:8"),
        ("empty", f"{path}:9 caption 0"),
        ("not_string", f"{path}:9 caption 2"),
        ("empty", f"{path}:10"),
    ]
    assert [(r.id, r.caption, r.group) for r in records(items)] == [
        ("caps:1#0", MOPED, "val2014/a.jpg"),
        ("caps:1#1", BIKE, "val2014/a.jpg"),
        ("caps:9#1", KNIFE, "val2014/c.jpg"),
        ("caps:11", "A  man riding\ta wave.", "val2014/e.jpg"),  # internal whitespace kept
    ]
    assert detect_format(str(path)) == "jsonl"


def test_jsonl_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps({"image": "a.jpg", "caption": SURF}) + "\n{\"image\": \"b.jpg\", \n",
                    encoding="utf-8")
    it = iter_source(SourceConfig(path=str(path)))
    assert next(it).caption == SURF  # rows before the bad line are delivered
    with pytest.raises(SourceError, match=rf"{path}:2: not valid JSON"):
        next(it)


def test_jsonl_record_not_object(tmp_path: Path) -> None:
    path = tmp_path / "list_lines.jsonl"
    path.write_text(json.dumps({"image": "a.jpg", "caption": SURF}) + "\n" + json.dumps([SURF]) + "\n")
    with pytest.raises(SourceError, match=rf"{path}:2: expected a JSON object, got list"):
        read(path)


def test_jsonl_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "other.jsonl"
    path.write_text(json.dumps({"img": "a.jpg", "text": SURF}) + "\n")
    with pytest.raises(SourceError, match=r"missing column\(s\) \['image', 'caption'\]; columns found: \['img', 'text'\]"):
        read(path)


def test_jsonl_id_column_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "ids.jsonl"
    path.write_text(
        json.dumps({"id": "q1", "image": "a.jpg", "caption": SURF}) + "\n"
        + json.dumps({"id": 2, "image": "b.jpg", "caption": [MOPED, BIKE]}) + "\n"
    )
    assert [r.id for r in read(path, id_column="id")] == ["q1", "2#0", "2#1"]
    path.write_text(
        json.dumps({"id": "q1", "image": "a.jpg", "caption": SURF}) + "\n"
        + json.dumps({"id": "q1", "image": "b.jpg", "caption": MOPED}) + "\n"
    )
    with pytest.raises(SourceError, match="duplicate id 'q1'"):
        read(path, id_column="id")


# ------------------------------------------------------------------------------------ parquet


def test_parquet_file_with_paths(tmp_path: Path) -> None:
    path = tmp_path / "pairs_test.parquet"
    pq.write_table(pa.table({"image": ["val2014/a.jpg", "val2014/a.jpg", None],
                             "caption": [MOPED, BIKE, SURF]}), path)
    items = read(path)
    assert records(items) == [
        CaptionRecord("pairs_test:0", MOPED, "val2014/a.jpg", "pairs_test", "test", "val2014/a.jpg"),
        CaptionRecord("pairs_test:1", BIKE, "val2014/a.jpg", "pairs_test", "test", "val2014/a.jpg"),
    ]
    assert skips(items) == [("no_image", f"{path}:record 2")]
    assert detect_format(str(path)) == "parquet"


def test_parquet_folder_with_embedded_images(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({
        "image": pa.array([{"bytes": PNG_BYTES, "path": None}, {"bytes": None, "path": "b.jpg"}],
                          type=image_type),
        "caption": [SURF, KNIFE],
    }), folder / "part-0000.parquet")
    pq.write_table(pa.table({
        "image": pa.array([{"bytes": None, "path": None}], type=image_type),
        "caption": [MOPED],
    }), folder / "part-0001.parquet")
    assert detect_format(str(folder)) == "parquet"
    items = read(folder, split="train")
    r0, r1 = records(items)
    assert (r0.id, r0.image_path, r0.image_bytes, r0.caption) == ("part-0000:0", None, PNG_BYTES, SURF)
    assert r0.group.startswith("sha1:") and len(r0.group) == 45
    assert (r1.id, r1.image_path, r1.image_bytes, r1.group) == ("part-0000:1", "b.jpg", None, "b.jpg")
    assert skips(items) == [("no_image", f"{folder / 'part-0001.parquet'}:record 0")]
    assert source_name(SourceConfig(path=str(folder) + "/")) == "shards"


def test_parquet_folder_parts_read_apart_give_the_whole_folder(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    (folder / "test").mkdir(parents=True)
    pq.write_table(pa.table({"image": ["a.jpg", "a.jpg"], "caption": [MOPED, BIKE]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"image": ["b.jpg", None], "caption": [SURF, KNIFE]}), folder / "test" / "part-0.parquet")
    cfg = SourceConfig(path=str(folder))
    parts = source_parts(cfg)
    assert parts == [SourcePart(file="part-0.parquet"), SourcePart(file="test/part-0.parquet")]
    apart = [item for part in parts for item in iter_source(cfg, part=part)]
    assert apart == list(iter_source(cfg))  # same ids, splits and skip locations
    assert [r.id for r in records(apart)] == ["part-0:0", "part-0:1", "test/part-0:0"]
    assert [r.split for r in records(apart)] == ["train", "train", "test"]
    assert skips(apart) == [("no_image", f"{folder / 'test' / 'part-0.parquet'}:record 1")]
    # read whole: one Parquet file, or a limit (which counts across the files)
    assert source_parts(SourceConfig(path=str(folder / "part-0.parquet"))) is None
    assert source_parts(SourceConfig(path=str(folder), limit=3)) is None
    with pytest.raises(ConfigError, match=r"is read whole, not by part \(bytes 0-10 \(line 1\)\)"):
        iter_source(cfg, part=SourcePart(start=0, end=10))


# a line-based file in parts: every cut gives the whole file's items (ids, skip locations, columns)


#: the cuts are found reading chunks of this many bytes (1 MiB by default): small ones put line ends,
#: \r\n pairs and multibyte characters across chunk boundaries
CHUNKS = (1, 2, 7, 1 << 20)


def read_in_parts(cfg: SourceConfig, part_bytes: int) -> list[CaptionRecord | Skip]:
    parts: list[SourcePart | None] = list(source_parts(cfg, part_bytes=part_bytes) or [None])
    return [item for part in parts for item in iter_source(cfg, part=part)]


def test_jsonl_parts_give_the_whole_file_at_every_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pairs_val.jsonl"
    lines = [
        # open_clip's column names in the first record: every part reads with the columns it decides
        b"\xef\xbb\xbf" + json.dumps({"filepath": "a.jpg", "title": [MOPED, BIKE]}).encode(),
        b"",
        json.dumps({"filepath": "b.jpg", "title": SURF}).encode(),
        b'{"filepath": "c.jpg", "title": "A kitchen \xc3\x28 with a stove"}',
        json.dumps({"filepath": "c.jpg", "title": "  "}).encode(),
        json.dumps({"filepath": "d.jpg", "title": KNIFE, "image": "x.jpg"}).encode(),
        json.dumps({"filepath": None, "title": KNIFE2}).encode(),
        json.dumps({"filepath": "e.jpg", "title": SINK}).encode(),  # no line end after the last line
    ]
    data = b"\r\n".join(lines)
    path.write_bytes(data)
    cfg = SourceConfig(path=str(path))
    whole = list(iter_source(cfg))
    assert [(r.id, r.image_path) for r in records(whole)] == [
        ("pairs_val:1#0", "a.jpg"), ("pairs_val:1#1", "a.jpg"), ("pairs_val:3", "b.jpg"),
        ("pairs_val:6", "d.jpg"), ("pairs_val:8", "e.jpg"),
    ]
    assert skips(whole) == [("invalid_utf8", f"{path}:4"), ("empty", f"{path}:5"), ("no_image", f"{path}:7")]
    assert source_parts(cfg) is None  # smaller than a part
    assert source_parts(cfg, part_bytes=len(data)) is None
    starts = [sum(len(line) + 2 for line in lines[:i]) for i in range(len(lines))] + [len(data)]
    # cut after every line (the blank one included)
    every_line = [SourcePart(start=starts[i], end=starts[i + 1], line=i + 1) for i in range(len(lines))]
    for chunk in CHUNKS:
        monkeypatch.setattr(sources_mod, "_CHUNK", chunk)
        assert source_parts(cfg, part_bytes=1) == every_line
        for part_bytes in range(1, len(data)):
            assert read_in_parts(cfg, part_bytes) == whole, (chunk, part_bytes)
    # a bad line fails the part that holds it, with the whole file's message
    path.write_bytes(b"\r\n".join([*lines[:-1], b'{"filepath": ']))
    parts = source_parts(cfg, part_bytes=1)
    assert parts is not None and len(parts) == 8
    with pytest.raises(SourceError, match=rf"{path}:8: not valid JSON"):
        list(iter_source(cfg, part=parts[-1]))
    with pytest.raises(SourceError, match=rf"{path}:8: not valid JSON"):
        list(iter_source(cfg))


def test_tsv_and_csv_parts_give_the_whole_file_at_every_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cc3m_train.tsv"
    data = (
        "\ufeffcaption\turl\r\n"  # Excel's BOM, CRLF line ends
        f"{MOPED}\thttp://x/1.jpg\r\n"
        f'"Stop" sign on a pole\thttp://x/2.jpg\r\n'  # a TSV is not quoted: this quote is text
        "\r\n"
        f"{BIKE}\thttp://x/3.jpg\r\n"
        "   \thttp://x/4.jpg\r\n"
        f"{SURF}\r\n"  # no url field
    ).encode() + b"A dog \xff on a couch\thttp://x/5.jpg\r\n" + f"{KNIFE}\thttp://x/6.jpg".encode()
    path.write_bytes(data)
    cfg = SourceConfig(path=str(path), image_column="url")
    whole = list(iter_source(cfg))
    assert [(r.id, r.caption) for r in records(whole)] == [
        ("cc3m_train:0", MOPED), ("cc3m_train:1", '"Stop" sign on a pole'), ("cc3m_train:3", BIKE),
        ("cc3m_train:7", KNIFE),
    ]
    assert skips(whole) == [("empty", f"{path}:6"), ("no_image", f"{path}:7"), ("invalid_utf8", f"{path}:8")]
    header = len("\ufeffcaption\turl\r\n".encode())
    second = header + len(f"{MOPED}\thttp://x/1.jpg\r\n")
    parts = source_parts(cfg, part_bytes=1)
    assert parts is not None and len(parts) == 8  # the data lines, each a part; the header in none
    assert parts[:2] == [SourcePart(start=header, end=second, line=2), SourcePart(start=second, end=parts[1].end, line=3)]
    for chunk in CHUNKS:
        monkeypatch.setattr(sources_mod, "_CHUNK", chunk)
        for part_bytes in range(1, len(data)):
            assert read_in_parts(cfg, part_bytes) == whole, (chunk, part_bytes)
    # a CSV without quotes is cut the same way, with ids from the given column
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("key,image,caption\n" + "".join(f"k{i},{i}.jpg,{c}\n" for i, c in enumerate([SURF, MOPED, BIKE, SINK])))
    csv_cfg = SourceConfig(path=str(csv_path), id_column="key")
    assert [r.id for r in read_in_parts(csv_cfg, 1)] == ["k0", "k1", "k2", "k3"]
    assert read_in_parts(csv_cfg, 30) == list(iter_source(csv_cfg))
    # not cut: a CSV with a quote anywhere (a quoted field may hold a line end), a bare \r
    # anywhere (the csv module ends a line there too), the header included; a file of a header
    # alone; a header longer than the reader looks for
    rows = f"a.jpg,{SURF}\nb.jpg,{BIKE}\n"
    for head in ('image,caption,"note"\n', '"image,caption\n', "image,caption\r\r\n", "x\rimage,caption\n"):
        csv_path.write_text(head + rows, newline="")
        assert source_parts(csv_cfg, part_bytes=1) is None, head
    csv_path.write_text(f'image,caption\na.jpg,{SURF}\nb.jpg,"A man, a moped"\nc.jpg,{BIKE}\n')
    assert source_parts(csv_cfg, part_bytes=1) is None
    monkeypatch.setattr(sources_mod, "_CHUNK", 7)
    path.write_bytes(data.replace(b"http://x/3.jpg", b"http://x/3\r.jpg"))
    assert source_parts(cfg, part_bytes=1) is None
    path.write_bytes(data + b"\r")  # a bare \r as the last byte of a chunk (and of the file)
    assert source_parts(cfg, part_bytes=1) is None
    path.write_bytes(b"caption\turl")
    assert source_parts(cfg, part_bytes=1) is None
    # an error in the header names line 1 in every part, as when the file is read whole
    path.write_bytes(b"caption\turl\t" + b"x" * 140_000 + b"\n" + data[header:])
    parts = source_parts(cfg, part_bytes=1)
    assert parts is not None and len(parts) == 8
    for part in (parts[0], parts[-1]):
        with pytest.raises(SourceError, match=rf"{path}:1: malformed tsv row: field larger than field limit"):
            list(iter_source(cfg, part=part))
    monkeypatch.setattr(sources_mod, "_MAX_HEADER", 12)
    path.write_bytes(data[3:])  # no BOM: the header line is 13 bytes
    assert source_parts(cfg, part_bytes=1) is None


def test_parquet_missing_columns_and_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad_cols.parquet"
    pq.write_table(pa.table({"path": ["a.jpg"], "text": [SURF]}), path)
    with pytest.raises(SourceError, match=r"bad_cols.parquet: missing column\(s\).*columns found: \['path', 'text'\]"):
        read(path)
    path = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"image": ["a.jpg", "b.jpg"],
                             "caption": pa.array([b"A dog \xff on a couch", SURF.encode()])}), path)
    items = read(path)
    assert skips(items) == [("invalid_utf8", f"{path}:record 0")]
    assert [r.caption for r in records(items)] == [SURF]


def test_parquet_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "fake.parquet"
    path.write_text("image,caption\n")
    with pytest.raises(SourceError, match="fake.parquet: not a readable parquet file"):
        read(path)


# ------------------------------------------------------------------------------------ Hugging Face


def test_hf_save_to_disk_keeps_image_bytes(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    on_disk = tmp_path / "val2014" / "b.jpg"  # save_to_disk sizes path-only images, so it must exist
    on_disk.parent.mkdir()
    on_disk.write_bytes(PNG_BYTES)
    ds = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": PNG_BYTES, "path": None}, {"bytes": None, "path": str(on_disk)}],
            "sentences": [[SURF, MOPED], [KNIFE]],
            "cocoid": [391895, 522418],
        },
        features=datasets.Features({
            "image": datasets.Image(),
            "sentences": datasets.List(datasets.Value("string")),
            "cocoid": datasets.Value("int64"),
        }),
    )
    folder = tmp_path / "coco_tiny"
    ds.save_to_disk(str(folder))
    assert detect_format(str(folder)) == "hf"
    items = read(folder, caption_column="sentences")
    assert [(r.id, r.caption, r.image_path, r.image_bytes, r.split) for r in items] == [
        ("train:0#0", SURF, None, PNG_BYTES, "train"),
        ("train:0#1", MOPED, None, PNG_BYTES, "train"),
        # save_to_disk embeds path-only images and keeps the file name: both must survive
        ("train:1#0", KNIFE, "b.jpg", PNG_BYTES, "train"),
    ]
    assert items[0].group == items[1].group != items[2].group
    assert [r.id for r in read(folder, caption_column="sentences", id_column="cocoid")] == [
        "391895#0", "391895#1", "522418#0"]
    fp = fingerprint(SourceConfig(path=str(folder)))
    assert fp == fingerprint(SourceConfig(path=str(folder), format="hf")) and len(fp) == 64


def test_hf_dataset_dict_splits(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"image": ["a.jpg"], "caption": [SURF]}),
        "validation": datasets.Dataset.from_dict({"image": ["b.jpg", "c.jpg"], "caption": [KNIFE, "  "]}),
    })
    folder = tmp_path / "dd"
    dd.save_to_disk(str(folder))
    items = read(folder)
    assert [(r.id, r.split) for r in records(items)] == [("train:0", "train"), ("validation:0", "validation")]
    assert skips(items) == [("empty", f"{folder}[validation]:record 1")]
    assert [r.id for r in records(read(folder, hf_split="validation"))] == ["validation:0"]
    with pytest.raises(SourceError, match=r"no split 'test'; splits: \['train', 'validation'\]"):
        read(folder, hf_split="test")


def test_hf_load_dataset_parquet_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    folder = tmp_path / "hub_like"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.table({"image": ["a.jpg", "b.jpg"], "caption": [SURF, MOPED]}),
                   folder / "data" / "train-00000-of-00001.parquet")
    for streaming in (True, False):
        items = read(folder, format="hf", hf_split="train", streaming=streaming)
        assert [(r.id, r.caption, r.image_path) for r in items] == [
            ("train:0", SURF, "a.jpg"), ("train:1", MOPED, "b.jpg")], streaming


def test_hf_missing_dataset(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    with pytest.raises(SourceError, match="cannot load Hugging Face dataset"):
        read(tmp_path / "nothing_here", format="hf")


# ------------------------------------------------------------------------------------ file errors


@pytest.mark.parametrize(
    ("name", "content", "kw", "message"),
    [
        ("trunc.json", '[{"image": "a.jpg", "caption": "A man', {}, r"trunc.json: not valid JSON at line 1"),
        ("scalar.json", '"just a string"', {"format": "karpathy"},
         r"scalar.json: not a Karpathy caption file.*found str"),
        ("dict.json", '{"data": []}', {"format": "karpathy"},
         r"dict.json: not a Karpathy caption file.*found \['data'\]"),
        ("list_as_coco.json", "[]", {"format": "coco"}, r"list_as_coco.json: not a COCO captions file"),
        ("nonobj.json", json.dumps([{"image": "a.jpg", "caption": SURF}, "b.jpg"]), {},
         r"nonobj.json:record 1: expected a JSON object, got str"),
        ("captions_val2014.json", json.dumps({"images": [], "annotations": [{"id": 1}, 5]}), {},
         r"captions_val2014.json:record 1: expected a JSON object, got int"),
        ("captions_train2014.json", json.dumps({"images": [{"file_name": "x.jpg"}], "annotations": []}),
         {}, r"captions_train2014.json:images record 0: no 'id'"),
        ("noann.json", json.dumps({"images": [], "annotations": [{"image_id": 1, "caption": SURF}]}), {},
         r"noann.json:record 0: annotation has no 'id'"),
        ("cols.json", json.dumps([{"file": "a.jpg", "caption": SURF}]), {},
         r"cols.json:record 0: missing column\(s\) \['image'\]; columns found: \['file', 'caption'\]"),
        ("empty.csv", "", {}, r"empty.csv: empty file"),
    ],
)
def test_malformed_files_raise(tmp_path: Path, name: str, content: str, kw: dict, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SourceError, match=message):
        read(path, **kw)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        iter_source(SourceConfig(path=str(tmp_path / "captions.json")))
    with pytest.raises(SourceError, match="does not exist"):
        iter_source(SourceConfig(path=str(tmp_path / "x.csv"), format="csv"))
    with pytest.raises(SourceError, match="does not exist"):
        detect_format(str(tmp_path / "captions.json"))


def test_bad_config_values(tmp_path: Path) -> None:
    path = write_json(tmp_path / "k.json", [{"image": "a.jpg", "caption": SURF}])
    with pytest.raises(ConfigError, match="unknown"):
        read(path, format="xml")
    with pytest.raises(ConfigError, match="limit"):
        read(path, limit=-1)


def test_invalid_utf8_in_json_document(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(
        b'[{"image": "a.jpg", "caption": ["Caf\xe9 table with two cups", "' + SURF.encode() + b'"]},'
        b' {"image": "b.jpg", "caption": "A lone \\ud83d surrogate"}]'
    )
    items = read(path)
    assert skips(items) == [("invalid_utf8", f"{path}:record 0 caption 0"),
                            ("invalid_utf8", f"{path}:record 1")]
    assert [(r.id, r.caption) for r in records(items)] == [("a#1", SURF)]


# ------------------------------------------------------------------------------------ misc


def test_limit_counts_caption_rows_including_skips(tmp_path: Path) -> None:
    path = write_json(tmp_path / "k.json", [
        {"image": "a.jpg", "caption": [MOPED, "", BIKE]},
        {"image": "b.jpg", "caption": [KNIFE]},
    ])
    items = read(path, limit=3)
    assert [getattr(i, "id", i) for i in items] == ["a#0", Skip("empty", f"{path}:record 0 caption 1"), "a#2"]
    assert read(path, limit=0) == []


def test_fingerprint_stable_and_byte_sensitive(tmp_path: Path) -> None:
    path = write_json(tmp_path / "k.json", [{"image": "a.jpg", "caption": SURF}])
    cfg = SourceConfig(path=str(path))
    fp = fingerprint(cfg)
    assert fp == fingerprint(SourceConfig(path=str(path), limit=1)) and len(fp) == 64
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"wave")] = ord("c")  # "wave" -> "cave": one byte
    path.write_bytes(bytes(raw))
    assert fingerprint(cfg) != fp

    folder = tmp_path / "pq"
    folder.mkdir()
    (folder / "a.parquet").write_bytes(b"one")
    (folder / "b.parquet").write_bytes(b"two")
    fpf = fingerprint(SourceConfig(path=str(folder)))
    assert fpf == fingerprint(SourceConfig(path=str(folder)))
    (folder / "b.parquet").write_bytes(b"twO")
    assert fingerprint(SourceConfig(path=str(folder))) != fpf


def test_detect_format_and_source_name(tmp_path: Path) -> None:
    assert detect_format("nlphuji/mscoco_2014_5k_test_image_text_retrieval") == "hf"
    assert source_name(SourceConfig(path="nlphuji/mscoco_2014_5k_test_image_text_retrieval")) == (
        "mscoco_2014_5k_test_image_text_retrieval")
    assert source_name(SourceConfig(path="/data/coco_karpathy_test.json")) == "coco_karpathy_test"
    assert source_name(SourceConfig(path="/data/coco_karpathy_test.json", name="kt")) == "kt"
    odd = tmp_path / "captions.txt"
    odd.write_text("A man riding a wave.\n")
    with pytest.raises(SourceError, match="cannot detect the caption format"):
        detect_format(str(odd))
    pretty = write_json(tmp_path / "pretty.json", {"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": []})
    pretty.write_text(json.dumps(json.loads(pretty.read_text()), indent=2))
    assert detect_format(str(pretty)) == "coco"
    lines = tmp_path / "lines.json"  # HF-style .json that is really JSON lines
    lines.write_text(json.dumps({"image": "a.jpg", "caption": SURF}) + "\n"
                     + json.dumps({"image": "b.jpg", "caption": KNIFE}) + "\n")
    assert detect_format(str(lines)) == "jsonl"
    assert [r.id for r in read(lines)] == ["lines:1", "lines:2"]


def test_tsv_quotes_are_text_not_quoting(tmp_path: Path) -> None:
    p = tmp_path / "cc.tsv"
    p.write_text(
        'image\tcaption\nb.jpg\t"Stop" sign on a pole\nc.jpg\t"A dog on a couch\nd.jpg\tA cat on a mat\n',
        encoding="utf-8",
    )
    recs = records(read(p))
    assert [(r.image_path, r.caption) for r in recs] == [
        ("b.jpg", '"Stop" sign on a pole'),
        ("c.jpg", '"A dog on a couch'),
        ("d.jpg", "A cat on a mat"),
    ]


def test_parquet_split_folders_keep_their_split_and_distinct_ids(tmp_path: Path) -> None:
    # hardneg's own output layout read back as input: <root>/<split>/part-*.parquet
    for split, caption in (("train", "A man riding a horse."), ("test", "A dog on a couch.")):
        (tmp_path / split).mkdir()
        pq.write_table(
            pa.table({"image": [f"{split}/1.jpg"], "caption": [caption]}),
            tmp_path / split / "part-00000-of-00001.parquet",
        )
    recs = records(read(tmp_path, format="parquet"))
    assert sorted((r.split, r.id, r.caption) for r in recs) == [
        ("test", "test/part-00000-of-00001:0", "A dog on a couch."),
        ("train", "train/part-00000-of-00001:0", "A man riding a horse."),
    ]
