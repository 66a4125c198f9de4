"""The settings of ``hardneg report`` (a ``report`` section of ``params.yaml``, flags, ``--set``).

Their own module, below both the report's builder (``report.py``) and its Markdown renderer
(``markdown.py``), so neither imports the other for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.errors import ConfigError
from pipeline.report.blind import BlindConfig
from pipeline.report.learned import LearnedConfig


@dataclass
class ReportConfig:
    """Settings of ``hardneg report``."""

    #: seeded examples per family in report.md
    examples: int = 5
    #: negatives per family that the language model found most obvious, shown in report.md
    obvious_examples: int = 3
    #: seeded examples per rule of each family, in report.json and report.md (0: counts and shares only)
    rule_examples: int = 3
    blind: BlindConfig = field(default_factory=BlindConfig)
    learned: LearnedConfig = field(default_factory=LearnedConfig)

    def validate(self) -> None:
        for key in ("examples", "obvious_examples", "rule_examples"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        self.blind.validate()
        self.learned.validate()
