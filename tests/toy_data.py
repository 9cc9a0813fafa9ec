"""A tiny one-shot dataset (two nested ellipsoids, random shapes per subject) for fast pipeline tests."""
import json
import os

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter


def toy_subject(rng: np.random.Generator, shape=(24, 28, 26)):
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(np.float32)
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    r_out = np.array(shape) * rng.uniform(0.28, 0.36, 3)
    r_in = r_out * rng.uniform(0.4, 0.55, 3)
    off = rng.uniform(-1.5, 1.5, 3)
    d_out = sum(((grid[i] - centre[i]) / r_out[i]) ** 2 for i in range(3))
    d_in = sum(((grid[i] - centre[i] - off[i]) / r_in[i]) ** 2 for i in range(3))
    label = np.zeros(shape, np.uint8)
    label[d_out <= 1] = 1
    label[d_in <= 1] = 2
    image = np.choose(label, [0.1, 0.55, 1.0]).astype(np.float32) * rng.uniform(0.9, 1.1)
    image = gaussian_filter(image, 0.7) + rng.normal(0, 0.03, shape).astype(np.float32)
    return image.astype(np.float32), label


def _write(arr, path, spacing=(1.5, 1.5, 1.5)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, path)


def make_toy_dataset(raw_root: str, dataset_id: int = 901, n_unlabelled: int = 4, n_test: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder = os.path.join(raw_root, f"Dataset{dataset_id:03d}_Toy")
    for sub in ("imagesTr", "labelsTr", "imagesUnlabelled", "labelsUnlabelledOracle", "imagesTs", "labelsTs"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    img, lab = toy_subject(rng)
    _write(img, os.path.join(folder, "imagesTr", "toy_000_0000.nii.gz"))
    _write(lab, os.path.join(folder, "labelsTr", "toy_000.nii.gz"))
    for i in range(n_unlabelled):
        img, lab = toy_subject(rng)
        _write(img, os.path.join(folder, "imagesUnlabelled", f"toy_u{i:02d}_0000.nii.gz"))
        # the pool's true labels, as our generated datasets ship them (only the benchmark's upper bound reads them)
        _write(lab, os.path.join(folder, "labelsUnlabelledOracle", f"toy_u{i:02d}.nii.gz"))
    for i in range(n_test):
        img, lab = toy_subject(rng)
        _write(img, os.path.join(folder, "imagesTs", f"toy_t{i:02d}_0000.nii.gz"))
        _write(lab, os.path.join(folder, "labelsTs", f"toy_t{i:02d}.nii.gz"))
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "outer": 1, "inner": 2},
                   "numTraining": 1, "file_ending": ".nii.gz"}, f)
    return folder
