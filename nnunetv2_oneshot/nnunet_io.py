"""Thin glue to nnU-Net's own planning/preprocessing API for one-shot datasets (no logic of nnU-Net copied)."""
from __future__ import annotations

from os.path import join

from nnunetv2_oneshot.validation import OneShotDataset, validate_oneshot_dataset


def _require(var: str) -> str:
    import nnunetv2.paths as p
    value = getattr(p, var)
    if not value or not str(value):  # an _EnvPath in nnU-Net 2.8: falsy when unset, truthy when set but empty
        raise ValueError(f"environment variable {var} is not set: export it (see README, 'Environment variables')")
    return str(value)


def dataset_name(dataset: str) -> str:
    """Dataset id ('990') or name ('Dataset990_OneShotBrain') -> name, with a one-line error if absent."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    _require("nnUNet_raw")
    try:
        return maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise ValueError(str(e).replace("\n", " ")) from None


def raw_dataset_folder(dataset: str) -> str:
    return join(_require("nnUNet_raw"), dataset_name(dataset))


def preprocess_unlabelled_for_plans(ds: OneShotDataset, name: str, plans_identifier: str,
                                    configuration: str = "3d_fullres") -> str:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2_oneshot.unlabelled import preprocess_unlabelled
    pre = join(_require("nnUNet_preprocessed"), name)
    pm = PlansManager(join(pre, plans_identifier + ".json"))
    cm = pm.get_configuration(configuration)
    return preprocess_unlabelled(ds.unlabelled, pm, cm, configuration, ds.dataset_json, join(pre, cm.data_identifier))


def plan_and_preprocess(dataset: str, cpu: bool = False, num_processes: int = 1,
                        configuration: str = "3d_fullres") -> str:
    """Validates first (one-line error, before any compute), then runs nnU-Net's fingerprint, planning and
    preprocessing of the labelled cases, then preprocesses the unlabelled images with the same plans.
    Returns the plans identifier."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                      preprocess)
    _require("nnUNet_preprocessed")
    name = dataset_name(dataset)
    ds = validate_oneshot_dataset(raw_dataset_folder(name), check_held_out=True)
    did = int(name[7:10])
    extract_fingerprints([did], num_processes=num_processes, check_dataset_integrity=True)
    plans_identifier = plan_experiments([did], "OneShotCPUPlanner" if cpu else "ExperimentPlanner")
    preprocess([did], plans_identifier, configurations=(configuration,), num_processes=(num_processes,))
    folder = preprocess_unlabelled_for_plans(ds, name, plans_identifier, configuration)
    print(f"Plans: {plans_identifier}; unlabelled images preprocessed into {folder}")
    return plans_identifier
