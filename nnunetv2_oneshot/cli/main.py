"""``nnunetv2-oneshot``: the plugin's own commands. Training and inference use nnU-Net's stock commands."""
from __future__ import annotations

import argparse
import os
import sys


def _cmd_doctor(args) -> int:
    from nnunetv2_oneshot.cli.doctor import run_doctor
    return run_doctor()


def _raw_root(args) -> str:
    root = args.raw or os.environ.get("nnUNet_raw")
    if not root:
        sys.exit("error: nnUNet_raw is not set and --raw was not given: say where to write the dataset")
    return root


def _cmd_make_dataset(args) -> int:
    from nnunetv2_oneshot.datasets import DATASET_MAKERS
    kw = {"seed": args.seed, "overwrite": args.overwrite}
    if args.id is not None:
        kw["dataset_id"] = args.id
    ixi_only = {"source": args.source, "pool": args.pool, "labels": args.labels}
    if args.which == "ixi":
        kw.update({k: v for k, v in ixi_only.items() if v is not None})
    elif any(v is not None for v in ixi_only.values()):
        sys.exit(f"error: --source, --pool and --labels are options of 'make-dataset ixi', not of {args.which}")
    try:
        folder = DATASET_MAKERS[args.which](_raw_root(args), **kw)
    except (FileExistsError, ValueError) as e:  # ValueError: a bad IXI source or option, one line
        sys.exit(f"error: {e}")
    print(f"Dataset written to {folder}")
    return 0


def _cmd_validate(args) -> int:
    from nnunetv2_oneshot.validation import validate_oneshot_dataset
    from nnunetv2_oneshot.nnunet_io import raw_dataset_folder
    try:
        ds = validate_oneshot_dataset(raw_dataset_folder(args.dataset), check_held_out=True)
    except ValueError as e:  # OneShotDatasetError, a missing env var or dataset: one line
        sys.exit(f"error: {e}")
    print(f"OK: {len(ds.labelled)} labelled case(s) (atlas {ds.atlas}), {len(ds.unlabelled)} unlabelled image(s), "
          f"{ds.num_channels} channel(s), labels {ds.label_values}")
    for held_out, case in ds.held_out_in_pool:
        print(f"warning: {held_out} has the same voxels as unlabelled case '{case}': the one-shot trainers see this "
              f"held-out scan (transductive; `benchmark` refuses it unless --transductive)", file=sys.stderr)
    return 0


def _cmd_suggest_atlas(args) -> int:
    import SimpleITK as sitk
    from nnunetv2_oneshot.propagate import _input_cases
    from nnunetv2_oneshot.registration.atlas_choice import rank_atlas_candidates
    try:
        folder, ending = _atlas_candidates_folder(args.dataset, args.file_ending)
        cases = _input_cases(folder, ending)
        if len(cases) < 3:
            raise ValueError(f"{folder} holds {len(cases)} image(s) named CASE_0000{ending}: ranking needs at least 3")
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"ranking {len(cases)} scans of {folder} by centrality (affine alignment, first channel; no label read)")
    ranking = rank_atlas_candidates({c: sitk.ReadImage(files[0], sitk.sitkFloat32) for c, files in cases},
                                    shrink=args.shrink, progress=lambda m: print("  " + m, flush=True))
    print(f"\n{'rank':>4}  {'case':<24}{'centrality':>10}")
    for i, (c, score) in enumerate(ranking[:args.top], start=1):
        print(f"{i:>4}  {c:<24}{score:10.4f}")
    print(f"\nlabel {ranking[0][0]} first: it is the scan most like the others after affine alignment")
    return 0


def _atlas_candidates_folder(dataset: str, file_ending: str) -> tuple:
    """(folder, file ending) of the scans to rank: a folder given as such, or a dataset's unlabelled folder."""
    if os.path.isdir(dataset):
        return dataset, file_ending
    import json
    from nnunetv2_oneshot.nnunet_io import raw_dataset_folder
    from nnunetv2_oneshot.validation import get_unlabelled_folder_name
    raw = raw_dataset_folder(dataset)
    with open(os.path.join(raw, "dataset.json")) as f:
        dj = json.load(f)
    return os.path.join(raw, get_unlabelled_folder_name(dj)), dj.get("file_ending", file_ending)


def _cmd_plan(args) -> int:
    from nnunetv2_oneshot.nnunet_io import plan_and_preprocess
    try:
        plan_and_preprocess(args.dataset, cpu=args.cpu, num_processes=args.np)
    except ValueError as e:  # OneShotDatasetError is a ValueError: one line, before any compute
        sys.exit(f"error: {e}")
    return 0


def _cmd_propagate(args) -> int:
    from nnunetv2_oneshot.propagate import propagate_folder, propagate_folder_classical
    try:
        if args.classical:
            propagate_folder_classical(args.i, args.o, args.d)
        else:
            propagate_folder(args.i, args.o, args.d, configuration=args.c, fold=args.f, trainer=args.tr,
                             plans=args.p, checkpoint=args.chk, device=args.device)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    return 0


def _cmd_demo(args) -> int:
    from nnunetv2_oneshot.cli.demo import run_demo
    return run_demo(args.workdir, quick=args.quick)


def _cmd_benchmark(args) -> int:
    from nnunetv2_oneshot.benchmark.report import verdict
    from nnunetv2_oneshot.benchmark.run import Benchmark, BenchmarkError
    budget = {k: v for k, v in dict(epochs=args.epochs, iterations=args.iterations, optimizer=args.optimizer,
                                    lr=args.lr, registration_iterations=args.registration_iterations).items()
              if v is not None}
    try:
        bench = Benchmark(args.dataset, output=args.o, methods=args.methods, seeds=args.seeds, budget=budget,
                          plans=args.p, device=args.device, pool_labels=args.pool_labels,
                          measure_cost=not args.no_cost, jobs=args.jobs, report_only=args.report_only,
                          transductive=args.transductive, split=args.split)
    except ValueError as e:  # BenchmarkError, OneShotDatasetError, missing env var: one line, before compute
        sys.exit(f"error: {e}")
    try:
        res = bench.run()
    except BenchmarkError as e:
        sys.exit(f"error: {e}")
    width = max(len(m) for m in res["methods"]) + 2
    print(f"\n{'method'.ljust(width)}{'Dice':>8}{'+-':>7}{'HD95 mm':>9}")
    for m, v in res["methods"].items():
        print(f"{m.ljust(width)}{v['dice_mean']:8.3f}{v['dice_std']:7.3f}{v['hd95_mean']:9.1f}")
    for k, g in res["goals"].items():
        print(f"goal {k}: {'n/a' if g['value'] is None else format(g['value'], '.3f')} -> {verdict(g)}")
    stem = f"{bench.out}/{bench.name}{bench.suffix}"
    print(f"scored on the {bench.split} split; results: {stem}.json, report {stem}.md")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnunetv2-oneshot", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("doctor", help="check that nnU-Net finds our trainers/planners and the environment is sane")
    s.set_defaults(func=_cmd_doctor)

    s = sub.add_parser("make-dataset", help="write a one-shot dataset into nnUNet_raw: the embedded brain (demo) or "
                                            "chest CT (smoke), or the real-MRI IXI benchmark from its folder")
    s.add_argument("which", choices=["brain", "ct", "ixi"],
                   help="brain: the demo's (synthetic T1 on 6 real brains); ct: a smoke set (one CT, deformed "
                        "copies); ixi: real T1 MRI from an IXI folder (the benchmark of record)")
    s.add_argument("--id", type=int, default=None, help="dataset id (default 990 brain, 991 ct, 992 ixi)")
    s.add_argument("--seed", type=int, default=0, help="seed of the generated images (brain, ct) or of the "
                                                       "split (ixi)")
    s.add_argument("--source", default=None,
                   help="ixi: folder with t1/, dlmuse_seg/ and muse_labels.csv (default ../shared/data/ixi from "
                        "the current directory); only read, never changed")
    s.add_argument("--pool", type=int, default=None,
                   help="ixi: keep N unlabelled scans (nested: a smaller pool is part of a larger one; default all)")
    s.add_argument("--labels", choices=["seg35", "muse"], default=None,
                   help="ixi: seg35 = 35 merged structures (default), muse = every single MUSE region (harder)")
    s.add_argument("--raw", default=None, help="raw root (default: $nnUNet_raw)")
    s.add_argument("--overwrite", action="store_true", help="replace a dataset that this command made before")
    s.set_defaults(func=_cmd_make_dataset)

    s = sub.add_parser("validate", help="check a one-shot raw dataset (one-line error on the first problem)")
    s.add_argument("dataset", help="dataset id or name")
    s.set_defaults(func=_cmd_validate)

    s = sub.add_parser("suggest-atlas", help="which scan to label: rank unlabelled scans by how central each is "
                                             "among the others (image similarity after affine alignment)")
    s.add_argument("dataset", help="dataset id or name (ranks its unlabelled folder), or a folder of images named "
                                   "CASE_0000<ending>")
    s.add_argument("--top", type=int, default=10, help="how many to list (default 10)")
    s.add_argument("--shrink", type=int, default=3,
                   help="down-sampling factor before registration (default 3: 6 mm for 2 mm scans)")
    s.add_argument("--file-ending", default=".nii.gz", help="for a folder: the images' ending (default .nii.gz)")
    s.set_defaults(func=_cmd_suggest_atlas)

    s = sub.add_parser("plan", help="validate, then nnU-Net fingerprint + plan + preprocess (3d_fullres) and "
                                    "preprocess the unlabelled images with the same plans")
    s.add_argument("dataset", help="dataset id or name")
    s.add_argument("--cpu", action="store_true", help="use OneShotCPUPlanner (plans nnUNetOneShotCPUPlans)")
    s.add_argument("-np", type=int, default=1, help="processes for preprocessing (default 1)")
    s.set_defaults(func=_cmd_plan)

    s = sub.add_parser("propagate", help="atlas label propagation baseline: warp the atlas labels onto images with "
                                         "a trained registration net; writes segmentations like nnUNetv2_predict")
    s.add_argument("-i", required=True, help="input folder (nnU-Net naming: CASE_0000.nii.gz)")
    s.add_argument("-o", required=True, help="output folder")
    s.add_argument("-d", required=True, help="dataset id or name")
    s.add_argument("-c", default="3d_fullres", help="configuration of the model (default 3d_fullres)")
    s.add_argument("-f", default="all", help="fold (default: all)")
    s.add_argument("-tr", default="OneShotRegAugTrainer",
                   help="trainer whose registration net warps the atlas (a one-shot trainer; default "
                        "OneShotRegAugTrainer)")
    s.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans; the CPU plan: "
                                                     "nnUNetOneShotCPUPlans)")
    s.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint file (default checkpoint_final.pth)")
    s.add_argument("-device", default=None, choices=["cuda", "cpu", "mps"],
                   help="default: cuda where torch sees a GPU, else cpu")
    s.add_argument("--classical", action="store_true",
                   help="no model: register the dataset's labelled case(s) onto each image with SimpleITK (affine "
                        "+ diffeomorphic demons; -c/-f/-tr/-p/-chk/-device are not used)")
    s.set_defaults(func=_cmd_propagate)

    s = sub.add_parser("demo", help="the main job on the embedded brain dataset: build, plan, train, predict, Dice")
    s.add_argument("--workdir", default="demo_output", help="holds nnUNet_raw/preprocessed/results of the demo")
    s.add_argument("--quick", action="store_true", help="tiny budget (seconds): checks the pipeline only")
    s.set_defaults(func=_cmd_demo)

    from nnunetv2_oneshot.benchmark.methods import METHODS
    from nnunetv2_oneshot.benchmark.run import DEFAULT_BUDGET
    s = sub.add_parser("benchmark", help="score the one-shot trainers against nnUNetTrainer on the one label, "
                                         "atlas propagation and the all-labels upper bound on imagesTs/labelsTs "
                                         "(resumes when run again with the same options)")
    s.add_argument("dataset", help="dataset id or name (one-shot format with imagesTs/labelsTs)")
    s.add_argument("-o", default=None, help="output folder (default: $nnUNet_results/DATASET/oneshot_benchmark)")
    s.add_argument("--methods", nargs="+", default=None, choices=list(METHODS), metavar="METHOD",
                   help=f"default: all of {', '.join(METHODS)}")
    s.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds, one model per method each "
                                                                     "(default 0)")
    s.add_argument("--epochs", type=int, default=None, help=f"default {DEFAULT_BUDGET['epochs']}")
    s.add_argument("--iterations", type=int, default=None,
                   help=f"per epoch, default {DEFAULT_BUDGET['iterations']}")
    s.add_argument("--optimizer", choices=["sgd", "adamw"], default=None,
                   help=f"default {DEFAULT_BUDGET['optimizer']}")
    s.add_argument("--lr", type=float, default=None, help=f"default {DEFAULT_BUDGET['lr']}")
    s.add_argument("--registration-iterations", type=int, default=None,
                   help=f"default {DEFAULT_BUDGET['registration_iterations']}")
    s.add_argument("-p", default="nnUNetOneShotCPUPlans", help="plans identifier (default nnUNetOneShotCPUPlans)")
    s.add_argument("-device", dest="device", default="cpu", choices=["cpu", "cuda"],
                   help="where models train and predict (default cpu: the CPU plan's budget)")
    s.add_argument("--pool-labels", default=None, help="true labels of the unlabelled pool, for the upper bound "
                                                       "(default: the dataset's labelsUnlabelledOracle/ if present)")
    s.add_argument("--no-cost", action="store_true", help="skip the cost-per-iteration measurement")
    s.add_argument("--jobs", type=int, default=1,
                   help="seeds trained at the same time (default 1), each with cores/JOBS torch threads unless "
                        "OMP_NUM_THREADS is set; 2 jobs on 2 CPU cores gave 1.2x the throughput of one")
    s.add_argument("--split", choices=["validation", "test"], default=None,
                   help="held-out scans to score: validation (imagesVal/labelsVal: every development decision) or "
                        "test (imagesTs/labelsTs: reported figures only); default validation where the dataset has "
                        "one, else test. Both share the trained models")
    s.add_argument("--transductive", action="store_true",
                   help="allow test scans that are also in the unlabelled pool (same voxels): the one-shot trainers "
                        "then see the scans they are scored on; refused without this flag")
    s.add_argument("--report-only", action="store_true",
                   help="write the results JSON, report and plots from the (seed, method) pairs finished so far; "
                        "trains and predicts nothing")
    s.set_defaults(func=_cmd_benchmark)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
