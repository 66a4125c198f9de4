"""``report.md``: the figures of ``report.json`` as tables, with examples and the plots linked.

One function per section, each returning its lines; :func:`render_markdown` joins them. Every
figure shown is read from the report dict (or the tallies and check results it was made from), so
the Markdown and the JSON never disagree. Rule names and example texts are arbitrary strings and go
through :func:`cell`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.contract.manifest import Manifest
    from pipeline.report.blind import BlindResult
    from pipeline.report.config import ReportConfig
    from pipeline.report.learned import LearnedResult
    from pipeline.report.tally import FamilyTally


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_ci(v: dict[str, Any], prefix: str, share: str = "prefers_positive") -> str:
    """``88.7% [87.8%, 89.5%]`` from a family's figures (``share`` and its 95% bounds)."""
    return f"{pct(v[prefix + share])} [{pct(v[prefix + 'ci95_low'])}, {pct(v[prefix + 'ci95_high'])}]"


def render_markdown(
    report: dict[str, Any],
    tallies: dict[str, FamilyTally],
    blind: BlindResult,
    learned: LearnedResult | None,
    plots: dict[str, str],
    cfg: ReportConfig,
    manifest: Manifest | None,
) -> str:
    lines = [
        *_header(report, manifest),
        *_coverage(report, plots),
        *_candidates(report, plots),
        *_length_change(report, plots),
        *_skips_and_rejects(report, plots, cfg, manifest),
        *_blind_check(report, blind, plots, cfg),
        *(_learned_check(report, learned, cfg) if learned is not None else []),
        *_examples(report, tallies),
    ]
    return "\n".join(lines).rstrip() + "\n"


def _plot(plots: dict[str, str], key: str, alt: str) -> list[str]:
    return [f"![{alt}]({plots[key]})\n"] if key in plots else []


def _header(report: dict[str, Any], manifest: Manifest | None) -> list[str]:
    ds = report["dataset"]
    splits = ", ".join(f"{k}: {v:,}" for k, v in ds["splits"].items())
    out = [
        f"# Quality report: {ds['name']}\n",
        f"{ds['rows']:,} captions ({splits}) of {ds['groups']:,} image groups, {ds['mean_caption_words']:.1f} words on average.",
    ]
    if manifest is None:
        out.append("The dataset has no manifest: skip and reject reasons are not known.")
    return [*out, ""]


def _coverage(report: dict[str, Any], plots: dict[str, str]) -> list[str]:
    out = ["## Coverage\n",
           "| family | negatives | captions covered | coverage | negatives per caption |",
           "|---|---:|---:|---:|---:|"]
    for f, v in report["families"].items():
        out.append(f"| {f} | {v['negatives']:,} | {v['captions_covered']:,} | {pct(v['coverage'])} | {v['negatives_per_caption']:.3f} |")
    return [*out, "", *_plot(plots, "coverage", "coverage")]


def _candidates(report: dict[str, Any], plots: dict[str, str]) -> list[str]:
    fams = report["families"]
    kmax = max((int(k) for v in fams.values() for k in v["candidates_per_caption"]), default=0)
    out = ["## Candidates per caption\n",
           "Captions by the number of negatives they have of each family.\n",
           "| family | " + " | ".join(str(k) for k in range(kmax + 1)) + " |",
           "|---|" + "---:|" * (kmax + 1)]
    for f, v in fams.items():
        out.append(f"| {f} | " + " | ".join(f"{v['candidates_per_caption'].get(str(k), 0):,}" for k in range(kmax + 1)) + " |")
    return [*out, "", *_plot(plots, "candidates", "candidates per caption")]


def _length_change(report: dict[str, Any], plots: dict[str, str]) -> list[str]:
    out = ["## Length change\n",
           "Negative length minus positive length, in words, over all negatives. Swaps keep the words;"
           " a replacement can change the length, which a text-only model can use.\n",
           "| family | mean | min | max | unchanged |",
           "|---|---:|---:|---:|---:|"]
    for f, v in report["families"].items():
        lc = v["length_change"]
        out.append(f"| {f} | {lc['mean']:+.3f} | {lc['min']:d} | {lc['max']:d} | {pct(lc['unchanged_share'])} |")
    return [*out, "", *_plot(plots, "length_change", "length change")]


def _skips_and_rejects(report: dict[str, Any], plots: dict[str, str], cfg: ReportConfig, manifest: Manifest | None) -> list[str]:
    out = ["## Skips and rejects\n"]
    if manifest is None:
        out.append("No manifest, so no reasons are known.\n")
        return [*out, *_plot(plots, "skips_rejects", "skips and rejects")]
    skipped = report.get("skipped", {})
    if skipped:
        out.append("| source rows skipped | rows |\n|---|---:|")
        out.extend(f"| {r} | {n:,} |" for r, n in skipped.items())
        out.append("")
    else:
        out.append("No source rows were skipped.\n")
    out += ["| family | generated | kept | rejected by reason |", "|---|---:|---:|---|"]
    for f, v in report["families"].items():
        rej = ", ".join(f"{r}: {n:,}" for r, n in v.get("rejected", {}).items()) or "none"
        out.append(f"| {f} | {v.get('generated', 0):,} | {v['negatives']:,} | {rej} |")
    out.append("")
    if manifest.skip_examples:
        out.append("Examples of skipped rows:\n")
        out.extend(f"- {cell(str(ex))}" for ex in manifest.skip_examples[: cfg.examples])
        out.append("")
    return [*out, *_plot(plots, "skips_rejects", "skips and rejects")]


def _blind_check(report: dict[str, Any], blind: BlindResult, plots: dict[str, str], cfg: ReportConfig) -> list[str]:
    bc = report["blind_check"]
    out = [
        "## Blind check\n",
        f"A text-only language model ({bc['model']}) trained on {bc.get('train_captions', 0):,} positive captions"
        f" of {bc.get('train_groups', 0):,} held-out image groups ({pct(bc['heldout_fraction'])} of the groups, seed"
        f" {bc['seed']}; these groups are never scored) compares each sampled positive with one of its negatives"
        f" (one pair per caption, at most {bc['max_pairs_per_family']:,} per family). The share is the pairs where it"
        " finds the positive more likely (a tie counts half); 50% means the text alone does not give the"
        " negative away, far above 50% means the family teaches a text shortcut. Intervals are 95% Wilson.\n",
    ]
    if bc.get("skipped"):
        out.append(f"Not run: {bc['skipped']}.\n")
    out += ["| family | pairs | prefers positive (sentence) | prefers positive (per token) | mean margin (bits) |",
            "|---|---:|---:|---:|---:|"]
    for f in report["families"]:
        v = bc.get(f, {})
        if not v.get("pairs"):
            out.append(f"| {f} | 0 | | | |")
            continue
        out.append(f"| {f} | {v['pairs']:,} | {format_ci(v, '')} | {format_ci(v, 'per_token_')} | {v['mean_margin_bits']:+.2f} |")
    out += ["", *_plot(plots, "blind_check", "blind check")]
    if cfg.obvious_examples:
        out += _obvious_examples(report, blind, cfg.obvious_examples)
    return out


def _obvious_examples(report: dict[str, Any], blind: BlindResult, n: int) -> list[str]:
    out: list[str] = []
    for f in report["families"]:
        pairs = sorted(blind.pairs.get(f, []), key=lambda p: (-p.per_token_margin, p.id))
        if not pairs:
            continue
        if not out:
            out.append("The negatives the model found least plausible relative to their positive (largest per-token margin):\n")
        out += [f"**{f}**\n", "| positive | negative | margin (bits/token) |\n|---|---|---:|"]
        out.extend(f"| {cell(p.positive)} | {cell(p.negative)} | {p.per_token_margin:+.2f} |" for p in pairs[:n])
        out.append("")
    return out


def _learned_check(report: dict[str, Any], learned: LearnedResult, cfg: ReportConfig) -> list[str]:
    lc, bc = report["learned_check"], report["blind_check"]
    out = [
        "## Learned text-only detector\n",
        f"A second blind judge, trained for the task as a text tower could be: per family, a {lc['model']}"
        " learns which of (positive, negative) is the positive from the pairs of some image groups, and is"
        f" scored on the pairs of other groups ({pct(lc['heldout_fraction'])} of the groups held out, seed"
        f" {lc['seed']}; no group on both sides; one pair per caption, at most {lc['max_pairs_per_family']:,} per"
        " family before the split). The accuracy is the share of held-out pairs where it picks the positive (a"
        " tie counts half); 50% means it found no text shortcut. Families with fewer than"
        f" {lc['min_pairs']:,} training or held-out pairs are not scored. Intervals are 95% Wilson.\n",
        "| family | training pairs | held-out pairs | held-out accuracy | n-gram LM prefers positive (sentence) |",
        "|---|---:|---:|---:|---:|",
    ]
    for f in report["families"]:
        v, b = lc.get(f, {}), bc.get(f, {})
        acc = format_ci(v, "", "accuracy") if "accuracy" in v else v.get("skipped", "")
        lm = format_ci(b, "") if b.get("pairs") else ""
        out.append(f"| {f} | {v.get('train_pairs', 0):,} | {v.get('heldout_pairs', 0):,} | {acc} | {lm} |")
    out.append("")
    fits = {f: learned.fits[f] for f in report["families"] if f in learned.fits}
    tells = {f: (fit.negative_tells, fit.positive_tells) for f, fit in fits.items() if fit.negative_tells or fit.positive_tells}
    if cfg.learned.top_ngrams and tells:
        out.append("The n-grams whose presence most marks a text as the negative (largest negative weights) or as"
                   " the positive (largest positive weights): in a replace family, words its rules use more, or"
                   " less, often than the captions do.\n")
        out += ["| family | marks the negative | marks the positive |", "|---|---|---|"]
        for f, sides in tells.items():
            out.append(f"| {f} | " + " | ".join(", ".join(f"`{cell(g)}` ({w:+.2f})" for g, w in ts) for ts in sides) + " |")
        out.append("")
    return out


def _examples(report: dict[str, Any], tallies: dict[str, FamilyTally]) -> list[str]:
    out = ["## Examples\n",
           "A seeded sample per family (a positive and one of its negatives), then the family's rules, most"
           " negatives first: each rule's negatives, its share of the family, and a seeded sample of what it makes"
           " (plausibility in bits where the run scored it).\n"]
    for f, v in report["families"].items():
        exs, rules = tallies[f].examples, v.get("rules", {})
        if not exs and not rules:
            continue
        out.append(f"**{f}**\n")
        if exs:
            out += ["| positive | negative |\n|---|---|", *(f"| {cell(pos)} | {cell(neg)} |" for pos, neg in exs), ""]
        if rules:
            out += [*_rule_table(rules), ""]
    return out


def _rule_table(rules: dict[str, Any]) -> list[str]:
    """One table of a family's rules: a row per example (the rule's figures on its first), or per rule without examples."""
    examples = [ex for r in rules.values() for ex in r.get("examples", {}).values()]
    if not examples:
        return ["| rule | negatives | share |\n|---|---:|---:|",
                *(f"| {cell(rule)} | {r['negatives']:,} | {pct(r['share'])} |" for rule, r in rules.items())]
    scored = any("plausibility" in ex for ex in examples)
    head = ["| rule | negatives | share | positive | negative |" + (" plausibility (bits) |" if scored else ""),
            "|---|---:|---:|---|---|" + ("---:|" if scored else "")]
    out = []
    for rule, r in rules.items():
        first = f"| {cell(rule)} | {r['negatives']:,} | {pct(r['share'])} |"
        for i, ex in enumerate(r.get("examples", {}).values() or [{}]):
            row = f"{first if i == 0 else '| | | |'} {cell(ex.get('positive', ''))} | {cell(ex.get('negative', ''))} |"
            if scored:
                row += f" {ex['plausibility']:+.2f} |" if "plausibility" in ex else " |"
            out.append(row)
    return [*head, *out]
