"""Configs: params.yaml, CLI overrides and Python all map onto the same typed dataclasses."""

from __future__ import annotations

import pytest

from pipeline.config import GenerateConfig
from pipeline.core.config import apply_overrides, config_hash, from_dict, load_yaml_section
from pipeline.core.errors import ConfigError


def test_from_dict_nested_and_typed():
    cfg = from_dict(GenerateConfig, {"k": "2", "source": {"path": "c.json", "limit": 10}, "families": "relation_swap,object_swap"})
    assert cfg.k == 2 and cfg.source.path == "c.json" and cfg.source.limit == 10
    assert cfg.families == ["relation_swap", "object_swap"]
    assert cfg.parse.model == "en_core_web_sm"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"kk": 1}, "unknown config key(s) ['kk']"),
        ({"source": {"pth": "x"}}, "unknown config key(s) ['source.pth']"),
        ({"k": "three"}, "k: expected an integer, got 'three'"),
        ({"k": 2.5}, "k: expected an integer"),
        ({"parse": {"batch_size": True}}, "parse.batch_size: expected an integer"),
        ({"source": "x"}, "source: expected a mapping"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        from_dict(GenerateConfig, data)


def test_overrides_parse_yaml_values():
    cfg = apply_overrides(GenerateConfig(), ["source.path=a.tsv", "k=5", "families=[object_swap]", "use_wordnet=false"])
    assert (cfg.source.path, cfg.k, cfg.families, cfg.use_wordnet) == ("a.tsv", 5, ["object_swap"], False)
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        apply_overrides(cfg, ["source.nope=1"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        apply_overrides(cfg, ["k"])


def test_validate():
    with pytest.raises(ConfigError, match="unknown families"):
        GenerateConfig(families=["color_swap"], source=from_dict(GenerateConfig, {"source": {"path": "x"}}).source).validate()
    with pytest.raises(ConfigError, match="source.path is required"):
        GenerateConfig().validate()
    ray_cfg = apply_overrides(GenerateConfig(), ["source.path=x", "engine=ray", "ray.worker_niceness=20"])
    with pytest.raises(ConfigError, match=r"ray.worker_niceness must be in 0\.\.19, got 20"):
        ray_cfg.validate()


def test_hash_ignores_output_settings_only():
    a = GenerateConfig(out="a", workers=1)
    b = GenerateConfig(out="b", workers=4, manifest_dir="elsewhere")
    c = GenerateConfig(out="a", k=2)
    assert config_hash(a.data_dict()) == config_hash(b.data_dict())
    assert config_hash(a.data_dict()) != config_hash(c.data_dict())


def test_yaml_section(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("generate:\n  k: 4\ntrain:\n  lr: 0.1\n")
    assert load_yaml_section(p, "generate") == {"k": 4}
    with pytest.raises(ConfigError, match="has no section 'report'"):
        load_yaml_section(p, "report")
