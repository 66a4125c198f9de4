"""Shared fixtures: one spaCy pipeline per test session (loading it takes about a second)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def nlp():
    from pipeline.config import ParseConfig
    from pipeline.nlp import load_nlp

    return load_nlp(ParseConfig())


@pytest.fixture(scope="session")
def parsed(nlp):
    """``parsed(caption) -> ParsedCaption``."""
    from pipeline.rules.families import ParsedCaption

    def _parse(text: str):
        return ParsedCaption.from_doc(nlp(text), text)

    return _parse


@pytest.fixture
def one_thread():
    """torch on one thread: tiny matrices only contend, and runs compared bit for bit need one count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
