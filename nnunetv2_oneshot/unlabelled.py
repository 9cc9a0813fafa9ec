"""Preprocess the unlabelled images of a one-shot dataset with exactly the plans of the labelled ones.

nnU-Net preprocesses ``imagesTr`` into ``nnUNet_preprocessed/DatasetXXX/<data_identifier>/``. Our unlabelled
images go to the SIBLING folder ``<data_identifier>_unlabelled/`` (never inside the data folder, where nnU-Net
would take them for training cases). A fingerprint of the plans' configuration, the dataset.json and the
input files (name, size, mtime) is stored beside them; when it changes, everything is redone.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from os.path import isdir, isfile, join
from typing import Dict, List

import numpy as np

from nnunetv2_oneshot.constants import UNLABELLED_PREPROCESSED_SUFFIX

FINGERPRINT_FILE = "oneshot_fingerprint.json"


def unlabelled_preprocessed_folder(preprocessed_dataset_folder: str) -> str:
    """``.../DatasetXXX/nnUNetPlans_3d_fullres`` -> ``.../DatasetXXX/nnUNetPlans_3d_fullres_unlabelled``."""
    return preprocessed_dataset_folder.rstrip(os.sep) + UNLABELLED_PREPROCESSED_SUFFIX


def _fingerprint(plans: dict, configuration: str, dataset_json: dict, cases: Dict[str, List[str]]) -> str:
    files = []
    for case in sorted(cases):
        for f in cases[case]:
            st = os.stat(f)
            files.append([case, os.path.basename(f), st.st_size, int(st.st_mtime_ns)])
    blob = json.dumps({"configuration": plans["configurations"][configuration],
                       "plans_name": plans.get("plans_name"),
                       "transpose_forward": plans.get("transpose_forward"),
                       "intensity": plans.get("foreground_intensity_properties_per_channel"),
                       "dataset_json": dataset_json, "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def preprocess_unlabelled(cases: Dict[str, List[str]], plans_manager, configuration_manager, configuration: str,
                          dataset_json: dict, preprocessed_dataset_folder: str, verbose: bool = True,
                          log=print) -> str:
    """Preprocess (cached) and return the folder holding ``<case>.npy`` arrays of shape (C, X, Y, Z).

    ``cases`` maps case id -> list of channel files (as returned by validation). Preprocessing runs only if
    the fingerprint differs from the stored one; a partial run never leaves a valid-looking fingerprint.
    """
    out = unlabelled_preprocessed_folder(preprocessed_dataset_folder)
    fp = _fingerprint(plans_manager.plans, configuration, dataset_json, cases)
    if _cache_valid(out, fp, cases):
        if verbose:
            log(f"Unlabelled images: using {len(cases)} cached preprocessed cases in {out}")
        return out
    # built beside the cache and moved in whole: trainings started side by side (folds, seeds) each build
    # one, none reads a half-written cache, and the first to finish wins
    tmp = f"{out}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    for i, case in enumerate(sorted(cases)):
        data, _, props = preprocessor.run_case(cases[case], None, plans_manager, configuration_manager, dataset_json)
        np.save(join(tmp, case + ".npy"), data.astype(np.float32))
        if verbose:
            log(f"Preprocessing unlabelled image {i + 1}/{len(cases)}: {case} -> shape {tuple(data.shape[1:])}")
    with open(join(tmp, FINGERPRINT_FILE), "w") as f:
        json.dump({"fingerprint": fp, "cases": sorted(cases)}, f, indent=1)
    if not _cache_valid(out, fp, cases):  # else another process finished first: keep its cache
        if isdir(out):  # stale: moved aside first, so the name is free at once
            old = f"{out}.old{os.getpid()}"
            try:
                os.rename(out, old)
                shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        try:
            os.rename(tmp, out)
        except OSError:  # another process moved its cache in meanwhile
            pass
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def _cache_valid(out: str, fp: str, cases: Dict[str, List[str]]) -> bool:
    fp_file = join(out, FINGERPRINT_FILE)
    if not isfile(fp_file):
        return False
    with open(fp_file) as f:
        return json.load(f).get("fingerprint") == fp and all(isfile(join(out, c + ".npy")) for c in cases)


def load_unlabelled(folder: str, cases: List[str]) -> Dict[str, np.ndarray]:
    return {c: np.load(join(folder, c + ".npy")) for c in cases}
