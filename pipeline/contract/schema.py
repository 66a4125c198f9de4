"""The Parquet schema of negative shards: the one place that knows column names and the version.

Readers (the trainer, ``inspect``, ``export``, ``publish``) import the names from here.

Version history:
- 1.0: first release.
- 1.1: ``provenance.plausibility`` (float32, null when the run scores nothing): the candidate's
  plausibility in bits, the mean smoothed log2 corpus count of the dependency pairs the edit creates
  minus that of the pairs it removes (``pipeline/rules/plausibility.py``, docs/negative-quality.md).
  Additive: readers of 1.0 shards see no such field, readers of 1.1 read 1.0 shards with it absent.
  The kept negatives of a family are stored best first.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import pyarrow as pa

from pipeline.contract.families import ALL_FAMILIES

SCHEMA_VERSION = "1.1"

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
            ("plausibility", pa.float32()),
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


_HF_DTYPES = {pa.string(): "string", pa.int32(): "int32", pa.int64(): "int64", pa.bool_(): "bool",
              pa.float32(): "float32", pa.float64(): "float64", pa.binary(): "binary"}


def hf_feature(dtype: pa.DataType) -> dict[str, Any]:
    """The ``datasets`` feature (4+/5 JSON form) of an Arrow type: lists, structs and scalar values."""
    if pa.types.is_list(dtype):
        return {"feature": hf_feature(dtype.value_type), "_type": "List"}
    if pa.types.is_struct(dtype):
        return {f.name: hf_feature(f.type) for f in dtype}
    if dtype in _HF_DTYPES:
        return {"dtype": _HF_DTYPES[dtype], "_type": "Value"}
    raise TypeError(f"no datasets feature for Arrow type {dtype}")


def hf_features_of(fields: list[pa.Field]) -> dict[str, Any]:
    """``datasets`` features derived from Arrow fields; the ``image`` column is an ``Image`` feature."""
    return {f.name: {"_type": "Image"} if f.name == IMAGE else hf_feature(f.type) for f in fields}


def hf_features() -> dict[str, Any]:
    """The ``datasets`` feature description of the shard schema, derived from its Arrow fields."""
    return hf_features_of(_FIELDS)


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


def rows_to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """A table from row dicts (tests and tools that build shards by hand)."""
    return pa.Table.from_pylist(list(rows), schema=schema)
