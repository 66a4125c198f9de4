"""The Parquet schema of negative shards: the one place that knows column names and the version.

Readers (the trainer, ``inspect``, ``export``, ``publish``) import the names from here.

Version history:
- 1.0: first release.
"""

from __future__ import annotations

import json
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
    """One output row: the record, its kept candidates per family, and their provenance."""
    row: dict[str, Any] = {
        ID: record.id,
        IMAGE: {"bytes": record.image_bytes, "path": record.image_path},
        CAPTION: record.caption,
        SOURCE: record.source,
        SPLIT: record.split,
        GROUP: record.group,
    }
    prov = []
    for fam in FAMILY_COLUMNS:
        cands = candidates.get(fam, [])
        row[fam] = [c.text for c in cands]
        for c in cands:
            prov.append(
                {
                    "family": c.family,
                    "rule": c.rule,
                    "text": c.text,
                    "token_spans": [list(s) for s in c.token_spans],
                    "char_spans": [list(s) for s in c.char_spans],
                }
            )
    row[PROVENANCE] = prov
    return row


def rows_to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    rows = list(rows)
    return pa.Table.from_pylist(rows, schema=schema)
