"""README's headline table, made from a committed benchmark results JSON, never typed by hand.

``python -m nnunetv2_oneshot.benchmark.headline`` rewrites the block between the two ``headline`` markers in
README.md from :data:`HEADLINE` (``--check``: exit 1 when README differs, without writing); the tests check the
same, so a README number that its records no longer give fails.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional

from nnunetv2_oneshot.benchmark.methods import ONE_LABEL, OURS, REGISTRATION, UPPER

#: the results JSON README's headline shows, relative to the repository root
HEADLINE = "benchmarks/results/Dataset990_OneShotBrain_4000its/Dataset990_OneShotBrain.json"
BEGIN = "<!-- headline: begin (made by `python -m nnunetv2_oneshot.benchmark.headline`; do not edit) -->"
END = "<!-- headline: end -->"
#: rows in this order (those the results have), with the words a newcomer reads
ROWS = [(OURS, "**OneShotDistillTrainer** (ours)"),
        ("OneShotRegAugTrainer", "OneShotRegAugTrainer (registration augmentation only)"),
        ("RRLMedSAMTrainer", "RRLMedSAMTrainer (SAM-guided)"),
        (ONE_LABEL, "nnU-Net on the one label (our recipe)"),
        ("nnUNetTrainer_1label_nnunetRecipe", "nnU-Net on the one label (nnU-Net's recipe)"),
        (REGISTRATION, "classical atlas registration (SimpleITK, nothing trained)"),
        ("atlas_propagation", "atlas propagation (the method's registration net)"),
        (UPPER, "nnU-Net on all pool labels (upper bound)")]


def _seeds(seeds: List[int]) -> str:
    return f"{seeds[0]}" if len(seeds) == 1 else f"{min(seeds)}–{max(seeds)}" \
        if sorted(seeds) == list(range(min(seeds), max(seeds) + 1)) else ", ".join(map(str, seeds))


def _ci(d: Optional[dict]) -> str:
    return "" if d is None else f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"


def table(res: dict) -> str:
    """The markdown table (and the line of what it is) of one results dict."""
    m = res["methods"]
    split = res.get("scored_split", "test")
    per_subject = res.get("per_subject") or {}
    rows = [(k, words) for k, words in ROWS if k in m]
    b = res["budget"]
    n_cases = len(res["split"].get(split, res["split"].get("test", [])))
    what = (f"Mean Dice over {len(m[rows[0][0]]['dice_per_label'])} structures on {n_cases} {split} scans that no "
            f"stage reads (± sd over seeds); {b['epochs']} epochs × {b['iterations']} iterations per model, plans "
            f"`{res['plans']}`.")
    if per_subject:
        what += " Differences are paired by subject, with 95% bootstrap intervals over the subjects."
        head = "| method | Dice | seeds | vs nnU-Net on the one label | vs classical registration | HD95 (mm) |"
    else:
        what += " These records have no per-subject Dice, so no paired intervals."
        head = "| method | Dice | seeds | HD95 (mm) |"
    lines = [what, "", head, "|---" * head.count(" | ") + "|---|"]
    for k, words in rows:
        v = m[k]
        spread = f" ± {v['dice_std']:.3f}" if v["dice_std"] > 0 else ""  # one seed, or nothing random
        cells = [words, f"{v['dice_mean']:.3f}{spread}", _seeds(v["seeds"])]
        if per_subject:
            ps = per_subject.get(k, {})
            cells += [_ci(ps.get("vs_" + ONE_LABEL)), _ci(ps.get("vs_" + REGISTRATION))]
        lines.append("| " + " | ".join(cells + [f"{v['hd95_mean']:.1f}"]) + " |")
    return "\n".join(lines)


def block(res: dict, source: str) -> str:
    return "\n".join([BEGIN, table(res), "", f"Made from [{os.path.basename(source)}]({source}).", END])


def readme_with_headline(readme: str, res: dict, source: str) -> str:
    """``readme`` with its headline block replaced; ValueError when it has no (single) block."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise ValueError("README needs exactly one headline block (the BEGIN and END markers of "
                         "nnunetv2_oneshot/benchmark/headline.py)")
    head, rest = readme.split(BEGIN)
    return head + block(res, source) + rest.split(END, 1)[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=".", help="repository root (default: the current directory)")
    p.add_argument("--check", action="store_true", help="only say whether README is up to date (exit 1 if not)")
    a = p.parse_args(argv)
    readme_path = os.path.join(a.root, "README.md")
    with open(os.path.join(a.root, HEADLINE)) as f:
        res = json.load(f)
    with open(readme_path) as f:
        old = f.read()
    try:
        new = readme_with_headline(old, res, HEADLINE)
    except ValueError as e:
        sys.exit(f"error: {e}")
    if a.check:
        print("README headline is up to date" if new == old else f"README headline differs from {HEADLINE}")
        return int(new != old)
    if new != old:
        with open(readme_path, "w") as f:
            f.write(new)
    print(f"README headline made from {HEADLINE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
