"""Rows of a shard built column by column (runs once per caption, so it is compiled with the rules)."""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import pyarrow as pa

from pipeline.contract.schema import (
    CAPTION,
    FAMILY_COLUMNS,
    GROUP,
    ID,
    IMAGE,
    PROVENANCE,
    PROVENANCE_TYPE,
    SOURCE,
    SPLIT,
    arrow_schema,
)
from pipeline.records import Candidate, CaptionRecord


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
                pa.array([c.plausibility for c in prov], pa.float32()),
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
