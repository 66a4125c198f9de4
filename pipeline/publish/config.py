"""Settings of ``hardneg publish`` and the Hub limits they default to (shared by layout, card and upload)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline.core.errors import ConfigError

DEFAULT_LICENSE = "cc-by-4.0"
#: Hub task ids (huggingface.js ``PIPELINE_DATA``) shown in the dataset filters that fit negatives
#: for contrastive image-text training: CLIP-style zero-shot classification, captioning, retrieval
TASK_CATEGORIES = ("zero-shot-image-classification", "image-to-text", "text-retrieval")
#: ``datasets.config.MAX_SHARD_SIZE`` (what ``push_to_hub`` writes)
MAX_SHARD_BYTES = 500_000_000
#: ``datasets.config.MAX_ROW_GROUP_SIZE`` (uncompressed); the viewer refuses row groups over ~300 MB
MAX_ROW_GROUP_BYTES = 100_000_000
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


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
