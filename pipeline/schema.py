"""The Parquet schema of negative shards: the one place that knows column names and the version.

Readers (the trainer, ``inspect``, ``export``, ``publish``) import the names from here.

Version history:
- 1.0: first release.
"""

from __future__ import annotations

import json
from itertools import accumulate
from typing import Any, Iterable

import pyarrow as pa

from .config import ALL_FAMILIES
from .records import Candidate, CaptionRecord

SCHEMA_VERSION = "1.0"

#: key of the hardneg metadata (JSON) in the Parquet file's key-value metadata
META_KEY = b"hardneg"
#: key Hugging Face ``datasets`` reads to restore features (so ``image`` loads as an Image)
HF_META_KEY = b"huggingface"

ID = "id"
IMAGE = "image"
CAPTION = "caption"
SOURCE = "source"
SPLIT = "split"
GROUP = "group"
PROVENANCE = "provenance"
FAMILY_COLUMNS: tuple[str, ...] = ALL_FAMILIES

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SPAN_LIST = pa.list_(pa.list_(pa.int32()))
PROVENANCE_TYPE = pa.list_(
    pa.struct(
        [
            ("family", pa.string()),
            ("rule", pa.string()),
            ("text", pa.string()),
            ("token_spans", SPAN_LIST),
            ("char_spans", SPAN_LIST),
        ]
    )
)

_FIELDS = [
    pa.field(ID, pa.string(), nullable=False),
    pa.field(IMAGE, IMAGE_TYPE),
    pa.field(CAPTION, pa.string(), nullable=False),
    pa.field(SOURCE, pa.string()),
    pa.field(SPLIT, pa.string()),
    pa.field(GROUP, pa.string()),
    *[pa.field(f, pa.list_(pa.string())) for f in FAMILY_COLUMNS],
    pa.field(PROVENANCE, PROVENANCE_TYPE),
]


def _value(dtype: str) -> dict[str, str]:
    return {"dtype": dtype, "_type": "Value"}


def hf_features() -> dict[str, Any]:
    """The ``datasets`` feature description of the schema (``datasets`` 4+/5 JSON form)."""
    span = {"feature": {"feature": _value("int32"), "_type": "List"}, "_type": "List"}
    feats: dict[str, Any] = {
        ID: _value("string"),
        IMAGE: {"_type": "Image"},
        CAPTION: _value("string"),
        SOURCE: _value("string"),
        SPLIT: _value("string"),
        GROUP: _value("string"),
    }
    for f in FAMILY_COLUMNS:
        feats[f] = {"feature": _value("string"), "_type": "List"}
    feats[PROVENANCE] = {
        "feature": {
            "family": _value("string"),
            "rule": _value("string"),
            "text": _value("string"),
            "token_spans": span,
            "char_spans": span,
        },
        "_type": "List",
    }
    return feats


def arrow_schema(extra_meta: dict[str, Any] | None = None) -> pa.Schema:
    """The shard schema with hardneg and ``datasets`` metadata attached."""
    meta = {"schema_version": SCHEMA_VERSION, **(extra_meta or {})}
    return pa.schema(
        _FIELDS,
        metadata={
            META_KEY: json.dumps(meta, sort_keys=True).encode(),
            HF_META_KEY: json.dumps({"info": {"features": hf_features()}}).encode(),
        },
    )


def read_meta(schema: pa.Schema) -> dict[str, Any]:
    """The hardneg metadata of a shard; raises ``ValueError`` when it is not a hardneg shard."""
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ValueError("not a hardneg shard: no 'hardneg' key in the Parquet metadata")
    return json.loads(raw)


def check_version(meta: dict[str, Any]) -> None:
    """Refuse shards of a different major schema version, which readers cannot interpret."""
    found = str(meta.get("schema_version", "?"))
    if found.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ValueError(f"shard schema version {found} is not readable by schema {SCHEMA_VERSION}")


def to_row(record: CaptionRecord, candidates: dict[str, list[Candidate]]) -> dict[str, Any]:
    """One output row as a dict (for readers and tests; writers use :class:`ShardBuilder`)."""
    builder = ShardBuilder()
    builder.add(record, candidates)
    return builder.to_table(arrow_schema()).to_pylist()[0]


class ShardBuilder:
    """Collects rows column by column and builds the Arrow table in one go.

    Building nested list/struct columns from flat value lists and offsets is several times
    cheaper than converting a dict per row, and the writer runs once per caption.
    """

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.img_bytes: list[bytes | None] = []
        self.img_paths: list[str | None] = []
        self.captions: list[str] = []
        self.sources: list[str] = []
        self.splits: list[str] = []
        self.groups: list[str] = []
        self.fam_values: dict[str, list[str]] = {f: [] for f in FAMILY_COLUMNS}
        self.fam_offsets: dict[str, list[int]] = {f: [0] for f in FAMILY_COLUMNS}
        #: every kept candidate in row order (family columns in schema order within a row)
        self.prov: list[Candidate] = []
        self.prov_offsets: list[int] = [0]

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, record: CaptionRecord, candidates: dict[str, list[Candidate]]) -> None:
        self.ids.append(record.id)
        self.img_bytes.append(record.image_bytes)
        self.img_paths.append(record.image_path)
        self.captions.append(record.caption)
        self.sources.append(record.source)
        self.splits.append(record.split)
        self.groups.append(record.group)
        prov = self.prov
        for fam in FAMILY_COLUMNS:
            values = self.fam_values[fam]
            cands = candidates.get(fam)
            if cands:
                for c in cands:
                    values.append(c.text)
                prov.extend(cands)
            self.fam_offsets[fam].append(len(values))
        self.prov_offsets.append(len(prov))

    @staticmethod
    def _spans(spans: list[tuple[tuple[int, int], ...]]) -> pa.Array:
        """``list<list<int32>>`` per candidate from its ``((start, end), ...)`` spans."""
        offsets = [0, *accumulate(len(s) for s in spans)]
        flat = [x for s in spans for pair in s for x in pair]
        pairs = pa.ListArray.from_arrays(pa.array(range(0, len(flat) + 1, 2), pa.int32()), pa.array(flat, pa.int32()))
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pairs)

    def to_table(self, schema: pa.Schema) -> pa.Table:
        image = pa.StructArray.from_arrays(
            [pa.array(self.img_bytes, pa.binary()), pa.array(self.img_paths, pa.string())], names=["bytes", "path"]
        )
        prov = self.prov
        prov_struct = pa.StructArray.from_arrays(
            [
                pa.array([c.family for c in prov], pa.string()),
                pa.array([c.rule for c in prov], pa.string()),
                pa.array([c.text for c in prov], pa.string()),
                self._spans([c.token_spans for c in prov]),
                self._spans([c.char_spans for c in prov]),
            ],
            fields=list(PROVENANCE_TYPE.value_type),
        )
        columns = {
            ID: pa.array(self.ids, pa.string()),
            IMAGE: image,
            CAPTION: pa.array(self.captions, pa.string()),
            SOURCE: pa.array(self.sources, pa.string()),
            SPLIT: pa.array(self.splits, pa.string()),
            GROUP: pa.array(self.groups, pa.string()),
            **{
                f: pa.ListArray.from_arrays(
                    pa.array(self.fam_offsets[f], pa.int32()), pa.array(self.fam_values[f], pa.string())
                )
                for f in FAMILY_COLUMNS
            },
            PROVENANCE: pa.ListArray.from_arrays(pa.array(self.prov_offsets, pa.int32()), prov_struct),
        }
        return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def rows_to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """A table from row dicts (tests and tools that build shards by hand)."""
    return pa.Table.from_pylist(list(rows), schema=schema)
