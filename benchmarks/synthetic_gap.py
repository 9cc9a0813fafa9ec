"""Do the synthetic training pairs look like real scans? (issue 4: "find out why"). Not a test.

For one seed of a finished benchmark run, every trained model segments three sets of volumes on the
registration canvas (preprocessed space, no test case read):

* ``synthetic``: the atlas warped onto each pool scan by that seed's registration net (exact flows), with the
  warped atlas label as reference: the pairs the one-shot students train on, before appearance changes;
* ``appearance``: the same, with the per-structure appearance transfer at full strength (beta = 1);
* ``appearance_means``: the same transfer moving each structure's mean only, not its spread
  (``SynthesisConfig.appearance_match_spread = False``, ``OneShotDistillTrainer_meanShift``);
* ``real``: the pool scans themselves, against their true labels (labelsUnlabelledOracle).

A model trained on the synthetic pairs that scores lower on them than one-label nnU-Net, which never saw them,
is held back by its training, not by a gap between synthetic and real scans. Models trained on real scans
(one-label nnU-Net, the upper bound) judge how realistic each kind of synthetic pair is.

    python benchmarks/synthetic_gap.py 991 --seed 0 --methods nnUNetTrainer_1label OneShotDistillTrainer

Needs nnUNet_raw/nnUNet_preprocessed/nnUNet_results as for the benchmark; reads its ``config.json``.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import tempfile
from os.path import isfile, join

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", help="dataset id or name")
    p.add_argument("-o", default=None, help="the benchmark's folder (default $nnUNet_results/DATASET/oneshot_benchmark)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    results = os.environ.get("nnUNet_results", "")
    # the trainer below only loads data; its log goes to a temporary folder, not into the user's results
    os.environ["nnUNet_results"] = tempfile.mkdtemp(prefix="synthgap_")

    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunetv2_oneshot.augmentation.synthesis import PairSynthesizer, pad_to_shape
    from nnunetv2_oneshot.benchmark.methods import METHODS
    from nnunetv2_oneshot.benchmark.run import Benchmark
    from nnunetv2_oneshot.constants import ORACLE_LABELS_FOLDER
    from nnunetv2_oneshot.evaluation import label_dice
    from nnunetv2_oneshot.registration.transform import warp
    from nnunetv2_oneshot.trainers.regaug import OneShotRegAugTrainer

    name = maybe_convert_to_dataset_name(int(a.dataset) if a.dataset.isdigit() else a.dataset)
    out = a.o or join(results, name, "oneshot_benchmark")
    unknown = [m for m in a.methods if m not in METHODS or METHODS[m].trainer is None]
    if unknown:
        sys.exit(f"error: not trained methods of the benchmark: {unknown}")
    if not isfile(join(out, "config.json")):
        sys.exit(f"error: {join(out, 'config.json')} does not exist: this study needs a benchmark run")
    cfg = load_json(join(out, "config.json"))
    try:  # the run's own layout and checks (same budget, pool labels present)
        bench = Benchmark(name, output=out, methods=a.methods, seeds=[a.seed], budget=cfg["budget"],
                          plans=cfg["plans"], device=cfg["device"], measure_cost=False)
    except ValueError as e:
        sys.exit(f"error: {e}")
    if bench.pool_labels is None:
        sys.exit(f"error: {name} has no {ORACLE_LABELS_FOLDER}/: this study needs the pool's true labels")
    model_dir = lambda m: bench._model_dir(a.seed, METHODS[m])
    missing = [m for m in a.methods if not isfile(join(model_dir(m), "checkpoint_final.pth"))]
    trained = bench.trained_registration(a.seed)
    reg = join(model_dir(trained[0]), "checkpoint_registration.pth") if trained else None
    if missing or reg is None:
        sys.exit(f"error: seed {a.seed} has no finished model of {missing}" if missing else
                 f"error: seed {a.seed} has no trained registration net in {out}")
    torch.set_num_threads(max(1, os.cpu_count() // 2))

    # a trainer only to load the data as the one-shot trainers do (same canvas, same preprocessing)
    budget = cfg["budget"]
    plans = load_json(join(nnUNet_preprocessed, name, cfg["plans"] + ".json"))
    plans["continue_training"] = False  # nnUNetTrainer.__init__ pops it (set by nnU-Net's run_training)
    dataset_json = load_json(join(nnUNet_preprocessed, name, "dataset.json"))
    t = OneShotRegAugTrainer(plans, "3d_fullres", "all", dataset_json, torch.device("cpu"))
    t.registration_encoder_channels = tuple(budget["registration_encoder_channels"])
    t.registration_decoder_channels = tuple(budget["registration_decoder_channels"])
    t.initialize()
    t._load_oneshot_data()
    t._load_registration_state(torch.load(reg, map_location="cpu", weights_only=False))
    d = t.oneshot_data
    num_classes = max(t.label_manager.all_labels) + 1
    synth = PairSynthesizer(d["atlases"], d["subjects"], t.compute_flows(), num_classes)
    atlas = synth.atlas_ids[0]
    pre = t.configuration_manager.preprocessor_class(verbose=False)
    pool = bench.ds.unlabelled
    canvas = next(iter(d["subjects"].values())).shape[1:]
    means_only = copy.copy(synth)
    means_only.config = dataclasses.replace(synth.config, appearance_match_spread=False)
    sets = {"synthetic": {}, "appearance": {}, "appearance_means": {}, "real": {}}
    for s in synth.subject_ids:
        img = warp(torch.from_numpy(d["atlases"][atlas][0][None]),
                   torch.from_numpy(synth.flows[(atlas, s)][None]))[0].numpy()
        lab = synth.exact_labels[(atlas, s)]
        sets["synthetic"][s] = (img, lab)
        sets["appearance"][s] = (synth.adapt_appearance(img, lab, atlas, s, 1.0), lab)
        sets["appearance_means"][s] = (means_only.adapt_appearance(img, lab, atlas, s, 1.0), lab)
        _, seg, _ = pre.run_case(pool[s], join(bench.pool_labels, s + dataset_json["file_ending"]), t.plans_manager,
                                 t.configuration_manager, dataset_json)
        sets["real"][s] = (d["subjects"][s], pad_to_shape(np.maximum(seg, 0).astype(np.int16), canvas, 0)[0])

    labels = {v: k for k, v in dataset_json["labels"].items() if isinstance(v, int) and v > 0}

    res = {"dataset": name, "seed": a.seed, "registration": reg, "methods": {}}
    print(f"{name}, seed {a.seed}: mean Dice over {len(synth.subject_ids)} pool scans "
          f"(synthetic = atlas warped onto them; appearance = the same at full appearance transfer; "
          f"appearance_means = moving structure means only)", flush=True)
    for m in a.methods:
        pr = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                             perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                             verbose_preprocessing=False, allow_tqdm=False)
        pr.initialize_from_trained_model_folder(os.path.dirname(model_dir(m)), ("all",), "checkpoint_final.pth")
        row = {}
        for kind, cases in sets.items():
            per_case = [label_dice(pr.predict_sliding_window_return_logits(torch.from_numpy(img)).argmax(0).numpy(),
                                   lab[0], sorted(labels)) for img, lab in cases.values()]
            per_label = np.nanmean(per_case, 0)
            row[kind] = {"mean": float(per_label.mean()),
                         "per_label": {labels[c]: float(v) for c, v in zip(sorted(labels), per_label)}}
        res["methods"][m] = row
        print(f"  {m:36s} " + "  ".join(f"{kind} {v['mean']:.3f}" for kind, v in row.items()), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
