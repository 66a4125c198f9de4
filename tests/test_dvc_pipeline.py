"""`dvc repro` end to end on a miniature world: every stage's outputs, the metrics, and no rerun.

The test copies what a fresh clone holds (dvc.yaml, .dvc/config, .dvcignore and the code the stages
depend on) into a temporary git repository, writes a params.yaml that is the project's own with the
world and the runs shrunk, and runs the real `dvc repro` there. dvc must not reach the network:
analytics are off in .dvc/config and in the environment, and its site cache lives in the temp dir.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FAMILIES = ["relation_swap", "attribute_swap", "object_swap"]
N_TRAIN, N_TEST, STEPS, EVERY = 40, 12, 6, 3
ALPHAS = [0.0, 0.5, 1.0]
STAGES = {"prepare", "parse", "negatives", "pretrain_data", "pretrain", "train_baseline", "train_ceclip",
          "train_fscclip", "evaluate", "wiseft", "report"}
RUNS = ("baseline", "ceclip", "fscclip")



def _miniature_params() -> dict:
    """The project's params.yaml with a tiny world and 6-step runs (same keys, so they are checked)."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    p["synth"].update(n_train=N_TRAIN, n_test=N_TEST, collision_batch_size=16)
    p["synth_pretrain"].update(n_train=N_TRAIN, collision_batch_size=16, recognition_per_class=2)
    p["negatives"].update(workers=1)
    p["pretrain_data"].update(workers=1)
    p["parse"].update(workers=1)
    for run in ("pretrain", "train"):
        p[run]["data"].update(batch_size=16, workers=0)
        p[run]["optim"].update(max_steps=STEPS, warmup_steps=2)
    p["wiseft"].update(alphas=ALPHAS)
    p["curves"].update(every=EVERY)
    p["report"].update(examples=1)
    return p


def _dvc(repo: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    if not (BIN / "dvc").exists() or not (BIN / "hardneg").exists():
        pytest.skip("dvc or the hardneg command is not installed next to this Python")
    repo = tmp_path_factory.mktemp("repo")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("pipeline", "trainer"):
        shutil.copytree(ROOT / d, repo / d, ignore=ignore)
    shutil.copytree(ROOT / "docs", repo / "docs", ignore=ignore)  # the report stage renders README/docs blocks
    for f in ("dvc.yaml", ".dvcignore", "README.md"):
        shutil.copy(ROOT / f, repo / f)
    (repo / ".dvc").mkdir()
    for f in ("config", ".gitignore"):
        shutil.copy(ROOT / ".dvc" / f, repo / ".dvc" / f)
    site = tmp_path_factory.mktemp("dvc-site")
    (repo / ".dvc" / "config.local").write_text(f"[core]\n    site_cache_dir = {site}\n", encoding="utf-8")
    (repo / "params.yaml").write_text(yaml.safe_dump(_miniature_params(), sort_keys=False), encoding="utf-8")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, capture_output=True)
    first = _dvc(repo, "repro")
    return repo, first.stdout


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_every_stage_ran_once(repo: tuple[Path, str]) -> None:
    path, out = repo
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out, out
    lock = yaml.safe_load((path / "dvc.lock").read_text(encoding="utf-8"))
    assert set(lock["stages"]) == STAGES


@pytest.mark.slow
def test_world_and_negatives(repo: tuple[Path, str]) -> None:
    path, _ = repo
    world = json.loads((path / "data/world/world.json").read_text(encoding="utf-8"))
    assert world["splits"]["train"]["images"] == N_TRAIN and world["splits"]["test"]["images"] == N_TEST
    # two captions per image, all of them reach stage 1's shards, split by the world's own split
    manifest = json.loads((path / "data/negatives/manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows"] == 2 * (N_TRAIN + N_TEST)
    test_rows = pq.read_table(path / "data/negatives/test").to_pylist()
    assert len(test_rows) == 2 * N_TEST and {r["split"] for r in test_rows} == {"test"}
    assert (path / "data/manifests/synth-world.json").is_file()
    # the pretraining world keeps out the fine-tuning world's test pairs; all its captions reach the shards
    pre = json.loads((path / "data/world_pretrain/world.json").read_text(encoding="utf-8"))
    assert pre["excluded_pairs"] == world["heldout_pairs"] and pre["splits"]["train"]["images"] == N_TRAIN
    pre_manifest = json.loads((path / "data/pretrain_shards/manifest.json").read_text(encoding="utf-8"))
    assert pre_manifest["rows"] == pre["splits"]["train"]["captions"]
    # the parse stage's store holds every caption, and the negatives came from it
    store = json.loads((path / "data/parsed/store.json").read_text(encoding="utf-8"))
    assert store["captions"] == 2 * (N_TRAIN + N_TEST)


def _test_pairs(path: Path) -> dict[str, int]:
    rows = pq.read_table(path / "data/negatives/test", columns=FAMILIES).to_pylist()
    return {f: sum(len([c for c in r[f] or [] if c]) for r in rows) for f in FAMILIES}


@pytest.mark.slow
def test_runs_have_same_steps_curves_and_thresholds(repo: tuple[Path, str]) -> None:
    path, _ = repo
    for run in RUNS:
        d = path / "runs" / run
        results = json.loads((d / "train_results.json").read_text())
        assert results["steps"] == STEPS and results["last_checkpoint"] is None
        assert results["curve"]["points"] == 3
        assert (d / "final/open_clip_pytorch_model.bin").stat().st_size > 1_000_000
        assert not (d / "checkpoints").exists()  # only the curve needed them
        # step 0 (initial weights), every 3 steps; the epoch-end checkpoint at step 5 is not a point
        assert [int(r["step"]) for r in _read_csv(d / "curve.csv")] == [0, EVERY, STEPS]
    cfg = {r: json.loads((path / "runs" / r / "train_config.json").read_text()) for r in RUNS}
    switches = ("hard_negatives", "imc", "cmr", "global_hn", "local_hn")
    assert [cfg["baseline"]["loss"][k] for k in switches] == [False, False, False, False, False]
    assert [cfg["ceclip"]["loss"][k] for k in switches] == [True, True, True, False, False]
    assert [cfg["fscclip"]["loss"][k] for k in switches] == [False, False, False, True, True]
    # apart from the objective and the folder, the three runs are configured identically
    for c in cfg.values():
        c.pop("output_dir")
        c.pop("loss")
    assert cfg["baseline"] == cfg["ceclip"] == cfg["fscclip"]
    # the curriculum: CE-CLIP logs a threshold per family at every step, plain CLIP has none
    ce = _read_csv(path / "runs/ceclip/metrics.csv")
    base = _read_csv(path / "runs/baseline/metrics.csv")
    assert len(ce) == len(base) == STEPS
    assert all(r["theta_relation_swap"] != "" for r in ce)
    assert all(r[f"theta_{f}"] == "" for r in base for f in FAMILIES)


@pytest.mark.slow
def test_compare_metrics(repo: tuple[Path, str]) -> None:
    path, _ = repo
    doc = json.loads((path / "metrics/compare.json").read_text(encoding="utf-8"))
    assert doc["steps"] == STEPS and doc["seed"] == 0 and doc["reference"] == "baseline"
    assert doc["pairs"] == _test_pairs(path)
    for f in FAMILIES:
        for run in RUNS:
            assert 0.0 <= doc[run][f] <= 1.0
        for run in RUNS[1:]:
            assert doc["gain"][run][f] == pytest.approx(doc[run][f] - doc["baseline"][f], abs=1e-4)
    # compare.json repeats hardneg eval's numbers; the curve's last point scores the same weights
    curves = _read_csv(path / "metrics/curves.csv")
    assert [int(r["step"]) for r in curves] == [0, EVERY, STEPS]
    for run in RUNS:
        ev = json.loads((path / f"metrics/eval_{run}.json").read_text(encoding="utf-8"))["shards"]["families"]
        bars = {r["family"]: float(r["accuracy"]) for r in _read_csv(path / f"metrics/accuracy_{run}.csv")}
        for f in FAMILIES:
            assert doc[run][f] == round(ev[f]["accuracy"], 4) == bars[f]
            assert float(curves[-1][f"{run}_{f}"]) == pytest.approx(ev[f]["accuracy"], abs=1.01 / ev[f]["pairs"])
    # the runs start from the same weights: identical step-0 points
    for f in FAMILIES:
        assert curves[0][f"baseline_{f}"] == curves[0][f"ceclip_{f}"] == curves[0][f"fscclip_{f}"]


@pytest.mark.slow
def test_recognition_and_the_wiseft_tradeoff(repo: tuple[Path, str]) -> None:
    path, _ = repo
    # recognition is named over the pretraining world's whole vocabulary: 11 colours, 12 shapes
    world = json.loads((path / "data/world_pretrain/world.json").read_text(encoding="utf-8"))
    assert world["recognition"]["colour"]["images"] == 2 * 11 and world["recognition"]["shape"]["classes"] == 12
    doc = json.loads((path / "metrics/tradeoff.json").read_text(encoding="utf-8"))
    evals = {r: json.loads((path / f"metrics/eval_{r}.json").read_text()) for r in ("pretrain", *RUNS)}
    for r in ("pretrain", *RUNS):
        zs = evals[r]["zeroshot"]
        assert set(zs) == {"colour", "shape"} and zs["colour"]["images"] == 22 and zs["shape"]["classes"] == 12
    assert doc["before"]["zeroshot"] == {k: v["top1"] for k, v in evals["pretrain"]["zeroshot"].items()}
    for run in RUNS:
        points = doc["wiseft"][run]
        assert [p["alpha"] for p in points] == ALPHAS
        # alpha 0 is the pretrained model and alpha 1 the fine-tune, bit for bit: the same scores
        assert {k: points[0][k] for k in ("compositional", "zeroshot")} == \
            {k: doc["before"][k] for k in ("compositional", "zeroshot")}
        assert {k: points[-1][k] for k in ("compositional", "zeroshot")} == \
            {k: doc["runs"][run][k] for k in ("compositional", "zeroshot")}
        assert (path / f"runs/wiseft_{run}/alpha_0.50/open_clip_pytorch_model.bin").is_file()
    md = (path / "reports/compare/report.md").read_text(encoding="utf-8")
    assert "## Compositionality against recognition" in md and "| before |" in md
    assert (path / "reports/compare/tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_reports(repo: tuple[Path, str]) -> None:
    path, _ = repo
    stage1 = json.loads((path / "reports/negatives/report.json").read_text(encoding="utf-8"))
    assert set(FAMILIES) <= set(stage1["families"])
    md = (path / "reports/compare/report.md").read_text(encoding="utf-8")
    assert f"Steps: **{STEPS}**" in md and "| relation_swap |" in md
    for png in ("accuracy_bars", "accuracy_vs_step", "thresholds", "loss"):
        assert (path / f"reports/compare/{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (path / "reports/negatives/report_coverage.png").is_file()


@pytest.mark.slow
def test_dvc_metrics_and_plots_read_the_outputs(repo: tuple[Path, str]) -> None:
    path, _ = repo
    shown = json.loads(_dvc(path, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]  # the workspace
    assert sorted(files) == ["metrics/compare.json", "metrics/tradeoff.json"]
    assert files["metrics/compare.json"]["data"] == json.loads((path / "metrics/compare.json").read_text())
    table = _dvc(path, "metrics", "show").stdout
    assert "gain.ceclip.relation_swap" in table and "fscclip.attribute_swap" in table
    plots = json.loads(_dvc(path, "plots", "show", "--json", "--split").stdout)["data"]
    for name in ("training_loss", "cmr_thresholds", "accuracy_per_family", "accuracy_vs_step_relation_swap",
                 "accuracy_vs_step_attribute_swap", "accuracy_vs_step_object_swap"):
        assert name in plots and plots[name][0]["type"] == "vega", plots.get(name)
    assert "reports/compare/thresholds.png" in plots
    # the curriculum plot reads one threshold per family and step of the CE-CLIP run
    anchors = plots["cmr_thresholds"][0]["anchor_definitions"]
    values = anchors["<DVC_METRIC_DATA>"]
    assert len(values) == 3 * STEPS
    assert {v["field"] for v in values} == {f"theta_{f}" for f in FAMILIES}


@pytest.mark.slow
def test_second_repro_does_nothing(repo: tuple[Path, str]) -> None:
    path, _ = repo
    out = _dvc(path, "repro").stdout
    assert "Data and pipelines are up to date." in out and "Running stage" not in out, out



@pytest.mark.slow
def test_a_ceclip_loss_weight_reruns_only_what_reads_it(repo: tuple[Path, str]) -> None:
    # runs after the no-op repro above (pytest keeps file order): the baseline ignores CE-CLIP weights
    path, _ = repo
    params = yaml.safe_load((path / "params.yaml").read_text(encoding="utf-8"))
    params["train"]["loss"]["w_cmr"] = 0.5
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    before = (path / "runs/baseline/final/open_clip_pytorch_model.bin").read_bytes()
    out = _dvc(path, "repro").stdout
    ran = {s for s in STAGES if f"Running stage '{s}'" in out}
    assert ran == {"train_ceclip", "evaluate", "wiseft", "report"}, out
    assert (path / "runs/baseline/final/open_clip_pytorch_model.bin").read_bytes() == before
    cfg = json.loads((path / "runs/ceclip/train_config.json").read_text(encoding="utf-8"))
    assert cfg["loss"]["w_cmr"] == 0.5

# ---- the pieces, without dvc -------------------------------------------------------------------


class _LookupModel:
    """Features by id: an image's id is its pixel value, a text's id its first token."""

    def __init__(self, images: list[list[float]], texts: list[list[float]]) -> None:
        import torch

        self.img, self.txt = torch.tensor(images), torch.tensor(texts)
        self.training = True

    def eval(self) -> None:
        self.training = False

    def train(self, mode: bool = True) -> None:
        self.training = mode

    def encode_image(self, x, normalize: bool = True):
        return self.img[x[:, 0, 0, 0].round().long()]

    def encode_text(self, tokens, normalize: bool = True):
        return self.txt[tokens[:, 0]]


def test_pair_accuracy_counts_ties_as_wrong() -> None:
    import torch

    from trainer.curves import PairSet
    from trainer.data import ImageSpec

    spec = ImageSpec(1, 1, (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))  # normalising keeps the value
    images = torch.tensor([0, 1], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 1, 1)
    tokens = torch.tensor([[0], [1], [2]])
    model = _LookupModel([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    pairs = torch.tensor([
        [0, 0, 1, 0],  # image 0: caption 1.0 vs negative 0.6 -> right
        [1, 2, 1, 0],  # image 1: 1.0 vs 0.8 -> right
        [1, 1, 2, 1],  # image 1: 0.8 vs 1.0 -> wrong
        [0, 0, 0, 1],  # a tie -> wrong
    ])
    res = PairSet(images, tokens, pairs, ["relation_swap", "attribute_swap"]).accuracy(model, spec, batch_size=1)
    assert res["families"] == {"relation_swap": {"accuracy": 1.0, "pairs": 2},
                               "attribute_swap": {"accuracy": 0.0, "pairs": 2}}
    assert res["macro"] == 0.5 and res["micro"] == 0.5 and res["pairs"] == 4
    assert model.training  # put back as it was


def test_merge_curves_keeps_common_steps() -> None:
    from trainer.compare import merge_curves

    a = [{"step": "0", "relation_swap": "0.5"}, {"step": "100", "relation_swap": "0.61"}]
    b = [{"step": "0", "relation_swap": "0.5"}, {"step": "50", "relation_swap": "0.7"},
         {"step": "100", "relation_swap": "0.93"}]
    assert merge_curves({"baseline": a, "ceclip": b}, ["relation_swap"]) == [
        {"step": 0, "baseline_relation_swap": 0.5, "ceclip_relation_swap": 0.5},
        {"step": 100, "baseline_relation_swap": 0.61, "ceclip_relation_swap": 0.93},
    ]


def _fake_run(root: Path, name: str, steps: int, acc: dict[str, float]) -> tuple[Path, Path]:
    run = root / name
    run.mkdir()
    (run / "train_results.json").write_text(json.dumps({"steps": steps, "wall_s": 1.5}))
    (run / "train_config.json").write_text(json.dumps({"seed": 3, "data": {"batch_size": 8}}))
    ev = root / f"eval_{name}.json"
    fams = {f: {"accuracy": a, "pairs": 10} for f, a in acc.items()}
    ev.write_text(json.dumps({"shards": {"families": fams, "macro": None}}))
    return run, ev


def test_compare_refuses_runs_of_different_length(tmp_path: Path) -> None:
    from pipeline.core.errors import ConfigError
    from trainer.compare import compare

    runs = {
        "baseline": _fake_run(tmp_path, "baseline", 100, {"relation_swap": 0.5, "attribute_swap": 0.75}),
        "ceclip": _fake_run(tmp_path, "ceclip", 120, {"relation_swap": 0.9, "attribute_swap": 0.8}),
    }
    with pytest.raises(ConfigError, match="different numbers of steps"):
        compare(runs, tmp_path / "out")
    doc = compare(runs, tmp_path / "out", allow_different_steps=True)
    assert doc["steps"] == {"baseline": 100, "ceclip": 120} and doc["seed"] == 3
    assert doc["gain"] == {"relation_swap": 0.4, "attribute_swap": 0.05, "macro": 0.225}
    assert (tmp_path / "out/accuracy_ceclip.csv").read_text() == "family,accuracy\nrelation_swap,0.9\nattribute_swap,0.8\n"
