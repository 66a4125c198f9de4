"""Helpers shared by the tests: small shard datasets written by us, and a local stand-in for the Hub.

Importable as ``support.shards`` and ``support.hub_standin`` (``tests/`` is on ``sys.path`` through
``conftest.py``'s folder, as pytest's rootdir-relative import puts it there).
"""
