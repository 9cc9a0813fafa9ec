"""Atlas label propagation baseline: the atlas labels warped onto new images by the trained registration net.

Images are preprocessed exactly as nnUNetv2_predict does (nnU-Net's preprocessor, the model's plans), the
warped one-hot atlas label is exported through nnU-Net's own export (resampling back to the original
geometry), so outputs are directly comparable with nnUNetv2_predict's. With several labelled cases the
atlases' warped probabilities are averaged (multi-atlas fusion).
"""
from __future__ import annotations

import os
from os.path import isfile, join

import numpy as np
import torch

from nnunetv2_oneshot.augmentation.synthesis import canvas_shape, pad_to_shape
from nnunetv2_oneshot.registration import RegistrationNet, folding_fraction
from nnunetv2_oneshot.registration.transform import warp


def load_registration(checkpoint: dict, device: torch.device):
    if "oneshot" not in checkpoint:
        raise ValueError("the checkpoint holds no registration net: train with a one-shot trainer "
                         "(e.g. -tr OneShotRegAugTrainer) first")
    state = checkpoint["oneshot"]
    if state.get("registration_backend", "net") != "net":
        raise ValueError(f"this model registered its pairs with the {state['registration_backend']} backend and "
                         f"holds no trained registration net: use `nnunetv2-oneshot propagate --classical`")
    net = RegistrationNet(**state["registration_config"]).to(device)
    net.load_state_dict(state["registration_net"])
    return net.eval(), state


@torch.no_grad()
def propagate_case(net: RegistrationNet, atlases: dict, image: np.ndarray, num_classes: int,
                   device: torch.device, stats: dict = None) -> np.ndarray:
    """Warped atlas label probabilities (K, *S) for a preprocessed image (C, *S). If ``stats`` is a dict, the
    flows' folding fractions (non-positive Jacobian determinant) are appended to ``stats["folding"]``."""
    multiple = 2 ** len(net.encoder_channels)
    probs = 0
    for atlas_img, atlas_seg in atlases.values():
        shape = canvas_shape([atlas_img.shape[1:], image.shape[1:]], multiple)
        moving, _ = pad_to_shape(atlas_img, shape, float(atlas_img.min()))
        fixed, crop = pad_to_shape(image, shape, float(image.min()))
        seg, _ = pad_to_shape(atlas_seg, shape, 0)
        flow = net(torch.from_numpy(moving[None]).float().to(device), torch.from_numpy(fixed[None]).float().to(device))
        if stats is not None:
            stats.setdefault("folding", []).append(folding_fraction(flow))
        onehot = torch.nn.functional.one_hot(torch.from_numpy(seg[0].astype(np.int64)), num_classes)
        onehot = onehot.permute(3, 0, 1, 2)[None].float().to(device)
        probs = probs + warp(onehot, flow)[0].cpu().numpy()[crop]
    return probs / len(atlases)


def _input_cases(input_folder: str, file_ending: str):
    """[(case id, [channel files])] of an nnUNetv2_predict-style input folder; one-line errors if none."""
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder
    if not os.path.isdir(input_folder):
        raise FileNotFoundError(f"input folder {input_folder} does not exist")
    cases = create_lists_from_splitted_dataset_folder(input_folder, file_ending)
    if not cases:
        raise FileNotFoundError(f"no images ending in {file_ending} in {input_folder}")
    return [(os.path.basename(files[0])[:-len(file_ending) - 5], files) for files in cases]


def pick_device(device: str = None) -> str:
    """``device`` as given when torch can use it, ValueError (one line) when not; None: cuda if available, else
    cpu (what a user of a CPU-only machine expects without passing -device)."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("-device cuda, but torch sees no CUDA device here: pass -device cpu (or leave -device out)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("-device mps, but torch sees no MPS device here: pass -device cpu (or leave -device out)")
    return device


def propagate_folder(input_folder: str, output_folder: str, dataset: str, configuration: str = "3d_fullres",
                     fold: str = "all", trainer: str = "OneShotRegAugTrainer", plans: str = "nnUNetPlans",
                     checkpoint: str = "checkpoint_final.pth", device: str = None,
                     results_folder: str = None) -> dict:
    """Writes one segmentation per input case; returns {"folding": {case: fraction of folded voxels}}.
    The model is looked up in ``results_folder`` (default: $nnUNet_results). ``device`` None: CUDA where torch
    sees a GPU, else the CPU; a device asked for by name that torch cannot use is a one-line error."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2_oneshot.nnunet_io import _require, dataset_name

    name = dataset_name(dataset)
    model = join(results_folder or _require("nnUNet_results"), name, f"{trainer}__{plans}__{configuration}")
    fold_dir = f"fold_{fold}" if fold == "all" or str(fold).isdigit() else fold
    ckpt_file = join(model, fold_dir, checkpoint)
    if not isfile(ckpt_file):
        raise FileNotFoundError(f"no checkpoint {ckpt_file}: train first, or pass -tr/-p/-f/-chk of your model")
    if not os.path.isdir(input_folder):  # before loading the checkpoint
        raise FileNotFoundError(f"input folder {input_folder} does not exist")
    dev = torch.device(pick_device(device))
    ckpt = torch.load(ckpt_file, map_location=dev, weights_only=False)
    net, state = load_registration(ckpt, dev)
    pm = PlansManager(join(model, "plans.json"))
    dataset_json = load_json(join(model, "dataset.json"))
    cm = pm.get_configuration(configuration)
    lm = pm.get_label_manager(dataset_json)
    num_classes = max(lm.all_labels) + 1
    cases = _input_cases(input_folder, dataset_json["file_ending"])
    os.makedirs(output_folder, exist_ok=True)
    preprocessor = cm.preprocessor_class(verbose=False)
    folding = {}
    for i, (case, files) in enumerate(cases):
        data, _, props = preprocessor.run_case(files, None, pm, cm, dataset_json)
        stats = {}
        probs = propagate_case(net, state["atlases"], data.astype(np.float32), num_classes, dev, stats)
        folding[case] = float(np.mean(stats["folding"]))
        logits = torch.from_numpy(np.log(np.clip(probs, 1e-6, None))).float()
        export_prediction_from_logits(logits, props, cm, pm, dataset_json, join(output_folder, case), False)
        print(f"propagated {i + 1}/{len(cases)}: {case} (folded voxels {100 * folding[case]:.3f}%)")
    return {"folding": folding}


def propagate_folder_classical(input_folder: str, output_folder: str, dataset: str) -> dict:
    """Classical atlas registration baseline (no model): the dataset's labelled case(s) registered onto each
    input image with SimpleITK (affine + diffeomorphic demons, :mod:`nnunetv2_oneshot.registration.classical`)
    in the images' own geometry, on their first channel. Writes ``CASE<file_ending>`` per input case like
    nnUNetv2_predict; returns {"seconds": {case: registration time}}."""
    import time

    import SimpleITK as sitk
    from nnunetv2_oneshot.nnunet_io import raw_dataset_folder
    from nnunetv2_oneshot.registration.classical import propagate_labels
    from nnunetv2_oneshot.validation import validate_oneshot_dataset

    ds = validate_oneshot_dataset(raw_dataset_folder(dataset), check_voxels=False)
    cases = _input_cases(input_folder, ds.file_ending)
    atlases = [(sitk.ReadImage(d["images"][0], sitk.sitkFloat32), sitk.ReadImage(d["label"]))
               for d in ds.labelled.values()]
    num_classes = max(ds.label_values) + 1
    os.makedirs(output_folder, exist_ok=True)
    seconds = {}
    for i, (case, files) in enumerate(cases):
        t0 = time.time()
        seg = propagate_labels(sitk.ReadImage(files[0], sitk.sitkFloat32), atlases, num_classes)
        sitk.WriteImage(seg, join(output_folder, case + ds.file_ending), True)
        seconds[case] = time.time() - t0
        print(f"registered {i + 1}/{len(cases)}: {case} ({seconds[case]:.0f} s)", flush=True)
    return {"seconds": seconds}
