"""``nnunetv2-oneshot benchmark DATASET``: every method on one budget, scored on held-out cases.

For each seed and method: train in a subprocess (nnU-Net's trainer, built as ``nnUNetv2_train`` builds it,
with the benchmark's budget), predict the held-out split with stock ``nnUNetv2_predict``, score it (Dice
with nnU-Net's evaluation, per structure and per subject, HD95). The held-out split is ``imagesTs``/``labelsTs``
(test), or ``imagesVal``/``labelsVal`` (validation, the default where a dataset has it: every development
decision is taken there, and the test split only reports). Held-out cases are seen by no stage, registration
included (the trainers only read imagesTr, labelsTr and the unlabelled folder). Everything lives in one
output folder; running the same command again resumes where it stopped (finished runs are kept,
interrupted trainings continue from their latest checkpoint).

Layout of the output folder::

    config.json                         budget, plans, dataset split: a resumed run must match it
    seed<k>/nnUNet_results/...          models of seed k (nnU-Net's layout; the upper bound's under
                                        seed<k>/all_labels, the nnU-Net-recipe baseline's under seed<k>/nnunet_recipe)
    seed<k>/predictions/<method>/       segmentations of the test cases (predictions_validation/: validation)
    seed<k>/predictions_pool/<method>/  ... of the unlabelled pool scans (where the pool has true labels and the
                                        dataset has no validation split)
    seed<k>/scores/<method>.json        Dice/HD95 per label, Dice per case (scores_validation/: validation)
    all_labels/nnUNet_raw|preprocessed  the upper bound's dataset: labelled cases + pool with its true labels
    logs/                               one log per command
    <dataset>.json, <dataset>.md, *.png the results, report and plots
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from datetime import datetime
from glob import glob
from os.path import basename, isdir, isfile, join
from typing import List, Optional

from nnunetv2_oneshot.benchmark.methods import METHODS, PROPAGATION, Method, training_attributes
from nnunetv2_oneshot.benchmark.report import checkpoint_curves, machine
from nnunetv2_oneshot.budgets import CPU, CPU_REG, CPU_SAM
from nnunetv2_oneshot.constants import VALIDATION_IMAGES, VALIDATION_LABELS
from nnunetv2_oneshot.process import bin_path as _bin, run_logged

CONFIGURATION = "3d_fullres"
# the demo's CPU recipe (budgets.py), with 40 instead of 16 epochs. Budget only: each trainer trains as its class
# defines it (a hint schedule the class does not have, as earlier runs had, would measure another method)
# registration: 600 iterations, not the demo's 150. Atlas labels warped onto the brain pool (its true labels,
# never the test donors; benchmarks/registration_budget.py) score Dice 0.435 unwarped, 0.500 after 150
# iterations, 0.562 after 300, 0.641 after 600 and 0.619 after 1200: at 150 every method built on the
# registration (propagation, the synthesised training pairs) was judged with a net that had barely moved.
DEFAULT_BUDGET = dict(epochs=40, iterations=CPU["num_iterations_per_epoch"],
                      val_iterations=CPU["num_val_iterations_per_epoch"], optimizer=CPU["optimizer_name"],
                      lr=CPU["initial_lr"], registration_iterations=600,
                      registration_lr=CPU_REG["registration_lr"],
                      registration_encoder_channels=list(CPU_REG["registration_encoder_channels"]),
                      registration_decoder_channels=list(CPU_REG["registration_decoder_channels"]), **CPU_SAM,
                      # one registration net per seed: the first one-shot trainer of a seed trains it, the others
                      # start from it (registration_init_from), so every method of a seed sees the same flows
                      # (differences are stage 2's) and stage 1 is paid once, not once per method
                      share_registration=True)


_LOG_NAME = re.compile(r"training_log_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)\.txt$")
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+): ")


def training_seconds(model_dir: str) -> Optional[float]:
    """Wall time a model's training took, summed over its legs: nnU-Net writes one training_log per start
    (a resumed or restarted training has several), named by the trainer's start time; a leg ends at its
    last time-stamped line. Counts a leg that was killed too (its time was spent), and a model found
    finished by a rerun keeps its time instead of 0. None where the folder has no training log."""
    total, found = 0.0, False
    for log in sorted(glob(join(model_dir, "training_log_*.txt"))):
        m = _LOG_NAME.search(basename(log))
        start = datetime(*map(int, m.groups())) if m else None
        end = None
        with open(log) as f:
            for line in f:
                t = _LOG_LINE.match(line)
                if t:
                    end = datetime.strptime(t.group(1), "%Y-%m-%d %H:%M:%S.%f")
                    start = start or end
        if start is not None and end is not None:
            total, found = total + max(0.0, (end - start).total_seconds()), True
    return total if found else None


#: held-out split -> (image folder, label folder); "validation" exists in datasets that have one (IXI)
HELD_OUT = {"test": ("imagesTs", "labelsTs"), "validation": (VALIDATION_IMAGES, VALIDATION_LABELS)}


class BenchmarkError(ValueError):
    """Bad benchmark input: the message is one line."""


def _say(msg: str) -> None:
    sys.stdout.write(msg + "\n")  # one write: with --jobs, print's two writes interleave between seeds
    sys.stdout.flush()


def _run(cmd: List[str], env: dict, log_file: str, echo_every: Optional[str] = None) -> float:
    """Runs a command with its output appended to ``log_file``; echoes lines containing ``echo_every``
    (progress). Returns the wall time; raises CommandFailed naming the log on failure."""
    echo = (lambda line: _say("      " + line.strip()[:150]) if echo_every in line else None) if echo_every else None
    return run_logged(cmd, env, log_file, echo, append=True)


class Benchmark:
    def __init__(self, dataset: str, output: Optional[str] = None, methods: Optional[List[str]] = None,
                 seeds: List[int] = (0,), budget: Optional[dict] = None, plans: str = "nnUNetOneShotCPUPlans",
                 device: str = "cpu", pool_labels: Optional[str] = None, measure_cost: bool = True,
                 jobs: int = 1, report_only: bool = False, transductive: bool = False, split: Optional[str] = None):
        from nnunetv2_oneshot.nnunet_io import _require, dataset_name, raw_dataset_folder
        from nnunetv2_oneshot.validation import validate_oneshot_dataset
        # every check before any compute, each a one-line error
        self.name = dataset_name(dataset)
        self.raw = raw_dataset_folder(self.name)
        self.ds = validate_oneshot_dataset(self.raw, check_held_out=True)
        # the held-out split scored: "validation" (imagesVal/labelsVal) takes every development decision, "test"
        # (imagesTs/labelsTs) only reports; a dataset with a validation split is scored on it unless told otherwise
        self.has_validation = isdir(join(self.raw, VALIDATION_IMAGES))
        self.split = split or ("validation" if self.has_validation else "test")
        if self.split not in HELD_OUT:
            raise BenchmarkError(f"--split must be one of {list(HELD_OUT)}, got {self.split!r}")
        for sub in HELD_OUT[self.split]:
            if not isdir(join(self.raw, sub)) or not os.listdir(join(self.raw, sub)):
                raise BenchmarkError(f"{join(self.raw, sub)} is missing or empty: the benchmark scores held-out "
                                     f"{self.split} cases ({' + '.join(HELD_OUT[self.split])}), which no stage may "
                                     f"see")
        shared = [(f, c) for f, c in self.ds.held_out_in_pool if f.startswith("imagesTs/")]
        self.transductive = bool(shared)
        if shared and not transductive:
            raise BenchmarkError(f"{shared[0][0]} has the same voxels as unlabelled case '{shared[0][1]}' "
                                 f"({len(shared)} such test scan(s)): the one-shot trainers would see the scans they "
                                 f"are scored on; remove them from the pool, or pass --transductive to accept it")
        self.methods = list(methods or METHODS)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise BenchmarkError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
        if PROPAGATION in self.methods and not any(METHODS[m].registration for m in self.methods):
            raise BenchmarkError("atlas_propagation reuses a one-shot trainer's registration net: add "
                                 "OneShotRegAugTrainer or OneShotDistillTrainer to --methods")
        if any(METHODS[m].sam for m in self.methods):
            from nnunetv2_oneshot.sam.litemedsam import LiteMedSAMUnavailable, litemedsam_weights_path
            try:
                litemedsam_weights_path()
            except LiteMedSAMUnavailable as e:
                raise BenchmarkError(f"{e} (needed by the RRLMedSAMTrainer methods; or leave them out of "
                                     f"--methods)") from None
        self.pool_labels = pool_labels or self._default_pool_labels()
        if "nnUNetTrainer_all_labels" in self.methods:
            if self.pool_labels is None:
                raise BenchmarkError("nnUNetTrainer_all_labels needs the true labels of the unlabelled pool: pass "
                                     "--pool-labels FOLDER or leave the method out")
            missing = [c for c in self.ds.unlabelled if not isfile(join(self.pool_labels, c + self.ds.file_ending))]
            if missing:
                raise BenchmarkError(f"no label {missing[0]}{self.ds.file_ending} in {self.pool_labels} (pool "
                                     f"labels must be named like the unlabelled cases)")
        if device not in ("cpu", "cuda"):
            raise BenchmarkError(f"device must be cpu or cuda, got {device!r}")
        if device == "cuda" and not report_only:  # a report needs no GPU: its numbers are in the records
            import torch
            if not torch.cuda.is_available():
                raise BenchmarkError("--device cuda, but torch sees no CUDA device here")
        if int(jobs) < 1:
            raise BenchmarkError(f"--jobs must be at least 1, got {jobs}")
        self.seeds = [int(s) for s in seeds]
        self.jobs = min(int(jobs), len(self.seeds))
        self.budget = dict(DEFAULT_BUDGET, **(budget or {}))
        self.plans = plans
        self.device = device
        self.measure_cost = measure_cost
        self.report_only = report_only
        self.out = os.path.abspath(output or join(_require("nnUNet_results"), self.name, "oneshot_benchmark"))
        self.env = dict(os.environ, nnUNet_def_n_proc=os.environ.get("nnUNet_def_n_proc", "1"),
                        nnUNet_n_proc_DA=os.environ.get("nnUNet_n_proc_DA", "1"))
        # seeds in parallel share the cores: one torch thread pool per job instead of oversubscribing
        self.job_env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // self.jobs))} \
            if self.jobs > 1 and "OMP_NUM_THREADS" not in os.environ else {}
        self._check_config()

    # ------------------------------------------------------------------ set-up
    def _default_pool_labels(self) -> Optional[str]:
        from nnunetv2_oneshot.constants import ORACLE_LABELS_FOLDER
        name = self.ds.dataset_json.get("oneshot", {}).get("oracle_labels_folder", ORACLE_LABELS_FOLDER)
        folder = join(self.raw, name)
        return folder if isdir(folder) else None

    def _cases(self, folder: str) -> List[str]:
        """Case ids of a label folder of the raw dataset ([] where there is none: a validation-only dataset)."""
        d = join(self.raw, folder)
        return sorted(f[:-len(self.ds.file_ending)] for f in os.listdir(d) if f.endswith(self.ds.file_ending)) \
            if isdir(d) else []

    def config(self) -> dict:
        """What a rerun must share with the run it resumes (the held-out split scored is not part of it: the
        models are the same for both splits, only predictions and score records differ)."""
        split = {"labelled": self.ds.labelled_cases, "atlas": self.ds.atlas, "unlabelled": self.ds.unlabelled_cases,
                 "test": self._cases("labelsTs")}
        if self.has_validation:
            split["validation"] = self._cases(VALIDATION_LABELS)
        cfg = {"dataset": self.name, "plans": self.plans, "configuration": CONFIGURATION, "budget": self.budget,
               "device": self.device, "split": split}
        if self.transductive:
            cfg["transductive"] = True
        return cfg

    @property
    def suffix(self) -> str:
        """Of the folders, score records and report of the split scored: '' for test, '_validation'."""
        return "" if self.split == "test" else "_" + self.split

    def _check_config(self):
        """A rerun must have the run's budget, plans and split. The device may differ: a run started on a GPU
        machine whose lease ended can be finished elsewhere (its trained models scored on the CPU, say); each
        score record names the machine that scored it, and the report lists them all."""
        f = join(self.out, "config.json")
        self.started_on = self.device
        if isfile(f):
            with open(f) as fh:
                old = json.load(fh)
            self.started_on = old.get("device", self.device)
            new = json.loads(json.dumps(self.config()))
            diff = [k for k in new if k != "device" and old.get(k) != new[k]]
            if diff:
                raise BenchmarkError(f"{self.out} holds a benchmark with a different {', '.join(diff)}: rerun with "
                                     f"the same options to resume it, or pass another -o")

    def _seed_dir(self, seed: int) -> str:
        return join(self.out, f"seed{seed}")

    def _score_file(self, seed: int, name: str) -> str:
        return join(self._seed_dir(seed), "scores" + self.suffix, name + ".json")

    def _results_root(self, seed: int, method: Method) -> str:
        return join(self._seed_dir(seed), method.subfolder, "nnUNet_results")

    def _env(self, seed: int, method: Method) -> dict:
        env = dict(self.env, nnUNet_results=self._results_root(seed, method), **self.job_env)
        if method.data == "all_labels":
            env.update(nnUNet_raw=join(self.out, "all_labels", "nnUNet_raw"),
                       nnUNet_preprocessed=join(self.out, "all_labels", "nnUNet_preprocessed"))
        return env

    def _model_dir(self, seed: int, method: Method) -> str:
        return join(self._results_root(seed, method), self.name,
                    f"{method.trainer}__{self.plans}__{CONFIGURATION}", "fold_all")

    def prepare(self):
        """Plans/preprocesses the dataset if needed (our ``plan`` command), then the upper bound's dataset."""
        from nnunetv2_oneshot.nnunet_io import _require
        plans_file = join(_require("nnUNet_preprocessed"), self.name, self.plans + ".json")
        if not isfile(plans_file):
            if self.plans not in ("nnUNetOneShotCPUPlans", "nnUNetPlans"):
                raise BenchmarkError(f"no plans {plans_file}: plan the dataset with those plans first")
            _say(f"planning {self.name} ({self.plans})")
            cmd = [_bin("nnunetv2-oneshot"), "plan", self.name] + (["--cpu"] if "CPU" in self.plans else [])
            _run(cmd, self.env, join(self.out, "logs", "plan.log"))
        if "nnUNetTrainer_all_labels" in self.methods:
            self._prepare_all_labels(plans_file)

    def _prepare_all_labels(self, plans_file: str):
        """Raw dataset = labelled case(s) + the pool with its true labels, preprocessed with the SAME plans
        (copied, so patch, spacing and network are the ones every other method uses)."""
        root = join(self.out, "all_labels")
        raw, pre = join(root, "nnUNet_raw", self.name), join(root, "nnUNet_preprocessed", self.name)
        done = join(pre, ".oneshot_ready")
        if isfile(done):
            return
        _say("preparing the upper bound's dataset (pool with its true labels, same plans)")
        shutil.rmtree(root, ignore_errors=True)
        for sub in ("imagesTr", "labelsTr"):
            os.makedirs(join(raw, sub))
        ending = self.ds.file_ending
        for case, d in self.ds.labelled.items():
            for img in d["images"]:
                shutil.copy(img, join(raw, "imagesTr", basename(img)))
            shutil.copy(d["label"], join(raw, "labelsTr", case + ending))
        for case, images in self.ds.unlabelled.items():
            for img in images:
                shutil.copy(img, join(raw, "imagesTr", basename(img)))
            shutil.copy(join(self.pool_labels, case + ending), join(raw, "labelsTr", case + ending))
        dj = {k: v for k, v in self.ds.dataset_json.items() if k != "oneshot"}
        dj["numTraining"] = len(self.ds.labelled) + len(self.ds.unlabelled)
        os.makedirs(pre)
        for folder in (raw, pre):  # nnU-Net's preprocessor reads the copy in the preprocessed folder
            with open(join(folder, "dataset.json"), "w") as f:
                json.dump(dj, f, indent=1)
        src = os.path.dirname(plans_file)
        for f in (basename(plans_file), "dataset_fingerprint.json"):
            if isfile(join(src, f)):
                shutil.copy(join(src, f), join(pre, f))
        env = self._env(self.seeds[0], METHODS["nnUNetTrainer_all_labels"])
        _run([_bin("nnUNetv2_preprocess"), "-d", str(int(self.name[7:10])), "-plans_name", self.plans, "-c", CONFIGURATION,
              "-np", "1"], env, join(self.out, "logs", "preprocess_all_labels.log"))
        open(done, "w").close()

    # ------------------------------------------------------------------ one (seed, method)
    def train(self, seed: int, name: str, reg_source: Optional[str] = None) -> float:
        method = METHODS[name]
        model = self._model_dir(seed, method)
        if isfile(join(model, "checkpoint_final.pth")):
            _say(f"[seed {seed}]     trained model found: {model}")
            return training_seconds(model) or 0.0
        resume = isfile(join(model, "checkpoint_latest.pth"))
        attributes = training_attributes(method, self.budget)
        if method.registration and self.budget.get("share_registration") and reg_source not in (None, name):
            shared = join(self._model_dir(seed, METHODS[reg_source]), "checkpoint_registration.pth")
            if not isfile(shared):
                raise BenchmarkError(f"{shared} is missing: {name} shares the registration net that {reg_source} "
                                     f"trains for seed {seed}")
            import torch
            done = torch.load(shared, map_location="cpu", weights_only=False)["registration_iteration"]
            if done < self.budget["registration_iterations"]:  # its own run was stopped during stage 1
                raise BenchmarkError(f"{name} shares the registration net of {reg_source} for seed {seed}, which "
                                     f"has trained {done}/{self.budget['registration_iterations']} registration "
                                     f"iterations: run {reg_source} first")
            attributes["registration_init_from"] = shared
        spec = dict(dataset=self.name, configuration=CONFIGURATION, trainer=method.trainer, plans=self.plans,
                    device=self.device, seed=seed, resume=resume, attributes=attributes)
        _say(f"[seed {seed}]     training {method.trainer} ({'resuming' if resume else 'from scratch'}; log in "
             f"{model})")
        wall = _run([sys.executable, "-m", "nnunetv2_oneshot.benchmark._train", json.dumps(spec)],
                    self._env(seed, method), join(self.out, "logs", f"train_seed{seed}_{name}.log"),
                    echo_every="Epoch time" if os.environ.get("NNUNET_ONESHOT_VERBOSE") else None)
        return training_seconds(model) or wall  # the logs: all legs of a resumed training, not the last

    def predict(self, seed: int, name: str, trainer_for_propagation: Optional[str] = None, test: bool = True,
                pool: bool = False) -> dict:
        """Predicts the test cases into ``predictions/<method>`` and/or the unlabelled pool scans into
        ``predictions_pool/<method>`` through the stock commands: both sets in ONE call (the images linked into
        one input folder), since each call pays the start-up of nnU-Net and its workers and loads the model.
        Returns ``{"predict_s": wall seconds, "predict_cases": cases predicted}``."""
        method = METHODS[name]
        ts, ending = join(self.raw, HELD_OUT[self.split][0]), self.ds.file_ending
        tests = self.test_images() if test else []
        test_cases = [c for c, _ in tests]
        pool_cases = sorted(self.ds.unlabelled) if pool else []
        if set(test_cases) & set(pool_cases):  # a case name in both sets: one output folder cannot hold both
            a, b = (self.predict(seed, name, trainer_for_propagation, test=t, pool=not t) for t in (True, False))
            return {k: a[k] + b[k] for k in a}
        outs = [join(self._seed_dir(seed), sub, name) for sub, on in (("predictions" + self.suffix, test),
                                                                     ("predictions_pool", pool)) if on]
        for o in outs:
            shutil.rmtree(o, ignore_errors=True)  # never score a half-written folder
        out = outs[0]
        log = join(self.out, "logs", f"predict{self.suffix if test else '_pool'}_seed{seed}_{name}.log")
        if test and pool:
            images = join(self._seed_dir(seed), f"predict_input_{name}")
            shutil.rmtree(images, ignore_errors=True)
            os.makedirs(images)
            for f in [f for _, fs in tests for f in fs] + [f for c in pool_cases for f in self.ds.unlabelled[c]]:
                try:  # links, not copies: the raw data is only ever read
                    os.symlink(os.path.abspath(f), join(images, basename(f)))
                except OSError:
                    shutil.copy(f, join(images, basename(f)))
        else:
            images = ts if test else self.ds.unlabelled_folder
        if method.classical:  # no model: the same for every seed, but cheap (seconds per image)
            cmd, env = [_bin("nnunetv2-oneshot"), "propagate", "--classical", "-i", images, "-o", out, "-d",
                        self.name], self.env
        elif method.trainer is None:
            src = METHODS[trainer_for_propagation]
            cmd, env = [_bin("nnunetv2-oneshot"), "propagate", "-i", images, "-o", out, "-d", self.name, "-tr",
                        src.trainer, "-p", self.plans, "-device", self.device], self._env(seed, src)
        else:
            cmd, env = [_bin("nnUNetv2_predict"), "-i", images, "-o", out, "-d", self.name, "-c", CONFIGURATION,
                        "-f", "all", "-tr", method.trainer, "-p", self.plans, "-device", self.device, "-npp", "1",
                        "-nps", "1"], self._env(seed, method)
        wall = _run(cmd, env, log)
        if test and pool:
            shutil.rmtree(images)
            os.makedirs(outs[1])
            for c in pool_cases:
                os.replace(join(out, c + ending), join(outs[1], c + ending))
        return {"predict_s": wall, "predict_cases": len(test_cases) + len(pool_cases)}

    def test_images(self) -> list:
        """[(case, channel files)] of the held-out split's images (``imagesTs`` or ``imagesVal``) as
        ``nnUNetv2_predict`` reads the folder: what is predicted."""
        from nnunetv2_oneshot.propagate import _input_cases
        return _input_cases(join(self.raw, HELD_OUT[self.split][0]), self.ds.file_ending)

    def score(self, seed: int, name: str) -> dict:
        from nnunetv2_oneshot.evaluation import dice_per_label, hd95_per_label
        pred = join(self._seed_dir(seed), "predictions" + self.suffix, name)
        ref = join(self.raw, HELD_OUT[self.split][1])
        return {"dice": dice_per_label(pred, ref, self.ds.dataset_json),
                "hd95": hd95_per_label(pred, ref, self.ds.dataset_json)}

    def scores_pool(self, name: str) -> bool:
        """Whether the method is scored on the pool: not without pool labels, not the upper bound, which
        trained on them, and not on a dataset with a validation split, where the pool's labels serve the upper
        bound only (decisions are taken on the validation split, so a pool score would only tempt)."""
        return self.pool_labels is not None and METHODS[name].data != "all_labels" and not self.has_validation

    def pool_score(self, seed: int, name: str) -> Optional[dict]:
        """Dice on the unlabelled pool scans (``predict(..., pool=True)`` first) against their true labels: the
        scans the one-shot trainers saw without labels, so a score that can judge a change to the method
        without the test donors. None where the method is not scored on the pool (``scores_pool``)."""
        from nnunetv2_oneshot.evaluation import dice_per_label
        if not self.scores_pool(name):
            return None
        return dice_per_label(join(self._seed_dir(seed), "predictions_pool", name), self.pool_labels,
                              self.ds.dataset_json)

    def registration_quality(self, seed: int, trainer_method: str) -> dict:
        """Atlas labels warped onto the POOL scans (the registration's own inputs) against the pool's true
        labels, and the folding of those flows. Without pool labels only folding is reported. On a dataset with
        a validation split the pool's labels are not read: the flows onto the scored split's scans instead."""
        from nnunetv2_oneshot.evaluation import dice_per_label
        from nnunetv2_oneshot.propagate import propagate_folder
        src = METHODS[trainer_method]
        if self.has_validation:
            images, labels = (join(self.raw, f) for f in HELD_OUT[self.split])
            out = join(self._seed_dir(seed), "registration_on_" + self.split)
        else:
            images, labels = self.ds.unlabelled_folder, self.pool_labels
            out = join(self._seed_dir(seed), "registration_on_pool")
        res = propagate_folder(images, out, self.name, CONFIGURATION, "all", src.trainer,
                               self.plans, device=self.device, results_folder=self._results_root(seed, src))
        folding = float(sum(res["folding"].values()) / len(res["folding"]))
        dice = dice_per_label(out, labels, self.ds.dataset_json)["mean"] if labels else None
        return {"warped_label_dice": dice, "folding_fraction": folding, "source": trainer_method,
                "scans": "pool" if labels == self.pool_labels else self.split}

    def trained_registration(self, seed: int) -> List[str]:
        """The methods of this seed that trained a registration net of their own: only they hold a
        checkpoint_registration.pth (the ones that share a net start from it and save none)."""
        return [m for m in METHODS if METHODS[m].registration
                and isfile(join(self._model_dir(seed, METHODS[m]), "checkpoint_registration.pth"))]

    @property
    def direct_methods(self) -> List[str]:
        """The methods run in their --methods order; atlas propagation comes after them all, since it reuses
        the registration net one of them trains."""
        return [m for m in self.methods if m != PROPAGATION]

    def registration_source(self, seed: int) -> Optional[str]:
        """The one-shot method of this seed whose registration net the others share (and atlas propagation
        uses): the one that trained it, if any has, so that a rerun with other --methods keeps the seed's
        flows; else the first one-shot method of this run."""
        order = self.direct_methods
        first = next((m for m in order if METHODS[m].registration), None)
        if not self.budget.get("share_registration"):
            return first
        trained = self.trained_registration(seed)
        return next((m for m in order if m in trained), trained[0] if trained else first)

    def unscored_model_files(self) -> List[str]:
        """Files, relative to the output folder, that let a rerun on another machine (any -device) finish the run
        without training again from scratch: of each (seed, method) without a score record (and of the seed's
        registration source while its atlas_propagation is unscored), the final checkpoint of a trained model or,
        of one still training, what resuming it needs (checkpoint_latest.pth, the registration stage's
        checkpoint that other methods of the seed start from, the classical backend's cached flows), with plans,
        dataset.json and training logs. ``benchmarks/gpu_benchmark.sh`` packs them when a GPU lease is about to
        end."""
        from nnunetv2_oneshot.trainers.regaug import CLASSICAL_FLOW_CACHE
        files = []
        for seed in self.seeds:
            scored = lambda name: isfile(self._score_file(seed, name))
            needed = [m for m in self.direct_methods if not scored(m)]
            if PROPAGATION in self.methods and not scored(PROPAGATION):
                needed.append(self.registration_source(seed))
            for name in dict.fromkeys(m for m in needed if m and METHODS[m].trainer):
                fold = self._model_dir(seed, METHODS[name])
                if isfile(join(fold, "checkpoint_final.pth")):
                    state = ["checkpoint_final.pth"]
                elif isfile(join(fold, "checkpoint_latest.pth")):  # still training: what --c resumes from
                    state = ["checkpoint_latest.pth", "checkpoint_registration.pth", CLASSICAL_FLOW_CACHE]
                else:
                    continue
                found = [join(fold, f) for f in state] + [join(fold, "..", "plans.json"),
                                                          join(fold, "..", "dataset.json")]
                found = [f for f in found if isfile(f)] + sorted(glob(join(fold, "training_log_*.txt")))
                files += [os.path.relpath(os.path.normpath(f), self.out) for f in found]
        return list(dict.fromkeys(files))

    def _run_seed(self, seed: int) -> None:
        """Every method of one seed; (seed, method) pairs scored before are skipped."""
        os.makedirs(join(self._seed_dir(seed), "scores" + self.suffix), exist_ok=True)
        reg_source = self.registration_source(seed)
        todo = self.direct_methods + ([PROPAGATION] if PROPAGATION in self.methods else [])
        for i, name in enumerate(todo):
            score_file = self._score_file(seed, name)
            if isfile(score_file):
                with open(score_file) as f:
                    rec = json.load(f)
                before = dict(rec)
                if "pool_dice" not in rec:  # scored before pool scores existed: add them
                    if self.scores_pool(name):
                        self.predict(seed, name, reg_source, test=False, pool=True)
                    rec["pool_dice"] = self.pool_score(seed, name)
                if METHODS[name].trainer and not rec.get("curves"):  # scored before records kept curves
                    curves = checkpoint_curves(self._model_dir(seed, METHODS[name]))
                    if curves:  # the model is still here
                        rec["curves"] = curves
                if rec != before:
                    self._write_json(score_file, rec)
                _say(f"[seed {seed}] {i + 1}/{len(todo)} {name}: done before")
                continue
            _say(f"[seed {seed}] {i + 1}/{len(todo)} {name}: {METHODS[name].description}")
            rec = {"method": name, "seed": seed, "machine": machine()}
            try:
                if METHODS[name].trainer is not None:
                    rec["train_s"] = self.train(seed, name, reg_source)
                    # the record carries what the report needs, so it can be made again without the models
                    rec["curves"] = checkpoint_curves(self._model_dir(seed, METHODS[name]))
                rec.update(self.predict(seed, name, reg_source, pool=self.scores_pool(name)))
            except Exception as e:  # said at once: with --jobs the other seeds run on before it is raised
                _say(f"[seed {seed}] {name} failed: {e}")
                raise
            rec.update(self.score(seed, name))
            if name == PROPAGATION:
                rec["registration"] = self.registration_quality(seed, reg_source)
            rec["pool_dice"] = self.pool_score(seed, name)
            self._write_json(score_file, rec)
            pool = "" if rec["pool_dice"] is None else f"; on the pool {rec['pool_dice']['mean']:.3f}"
            _say(f"[seed {seed}]     mean Dice {rec['dice']['mean']:.3f}, mean HD95 {rec['hd95']['mean']:.1f} mm"
                 f"{pool}")

    @staticmethod
    def _write_json(path: str, obj) -> None:
        with open(path + ".tmp", "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(path + ".tmp", path)

    # ------------------------------------------------------------------ everything
    def run(self) -> dict:
        from nnunetv2_oneshot.benchmark import report
        if self.report_only:  # what is finished so far, e.g. while other seeds of a long run are still to do
            if not isfile(join(self.out, "config.json")):
                raise BenchmarkError(f"--report-only: no benchmark run in {self.out}")
            if not report.load_scores(self):
                raise BenchmarkError(f"--report-only: no (seed, method) pair of these --seeds and --methods has "
                                     f"finished in {self.out}")
            cost = self.cost() if isfile(join(self.out, "cost.json")) else None
            return report.write(self, cost)
        os.makedirs(join(self.out, "logs"), exist_ok=True)
        cfg = dict(self.config(), device=self.started_on)  # the device the run was started on
        with open(join(self.out, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        _say(f"benchmark of {self.name} in {self.out}\n  budget {self.budget}\n  seeds {self.seeds}, methods "
             f"{self.methods}\n  split: atlas {cfg['split']['atlas']}, {len(cfg['split']['unlabelled'])} "
             f"unlabelled, {self.split} {cfg['split'][self.split]} (scored)")
        if self.device != self.started_on:
            _say(f"  started on {self.started_on}, going on on {self.device}: each score record names the machine "
                 f"that scored it")
        self.prepare()
        if self.jobs > 1:
            from concurrent.futures import ThreadPoolExecutor
            threads = self.job_env.get("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS"))
            _say(f"  {self.jobs} seeds at a time, OMP_NUM_THREADS={threads} each")
            with ThreadPoolExecutor(self.jobs) as pool:  # the work is in subprocesses; threads only wait on them
                list(pool.map(self._run_seed, self.seeds))
        else:
            for seed in self.seeds:
                self._run_seed(seed)
        cost = None
        if {"nnUNetTrainer_1label", "OneShotDistillTrainer"} <= set(self.methods) and \
                (self.measure_cost or isfile(join(self.out, "cost.json"))):
            cost = self.cost()
        return report.write(self, cost)

    def cost(self) -> dict:
        from nnunetv2_oneshot.benchmark.cost import cost_ratios
        f = join(self.out, "cost.json")
        if isfile(f):
            with open(f) as fh:
                return json.load(fh)
        _say("measuring cost per training iteration (nnUNetTrainer vs OneShotDistillTrainer, same patch/batch)")
        res = cost_ratios(self, join(self.out, "logs", "cost.log"))
        with open(f, "w") as fh:
            json.dump(res, fh, indent=1)
        return res
