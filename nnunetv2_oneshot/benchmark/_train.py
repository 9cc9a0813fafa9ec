"""One benchmark training run in its own process: ``python -m nnunetv2_oneshot.benchmark._train JSON``.

Builds the trainer exactly as ``nnUNetv2_train`` does (nnU-Net's ``get_trainer_from_args``), sets the
benchmark's budget attributes and the seed, resumes from the latest checkpoint when asked, and trains.
nnU-Net's final validation is skipped: with fold ``all`` it would score the training case(s), and the
benchmark scores the held-out test cases with stock ``nnUNetv2_predict`` instead.
"""
import json
import random
import sys


def build_trainer(spec: dict, continue_training: bool = False):
    """The trainer ``spec["trainer"]`` for fold ``all``, built by nnU-Net's ``get_trainer_from_args``, with the
    attributes ``spec["attributes"]`` set (JSON lists back to the tuples the trainers use)."""
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2_oneshot.trainers.variants import apply_budget
    trainer = get_trainer_from_args(spec["dataset"], spec.get("configuration", "3d_fullres"), "all", spec["trainer"],
                                    spec["plans"], continue_training=continue_training,
                                    device=torch.device(spec["device"]))
    apply_budget(trainer, {k: tuple(v) if isinstance(v, list) else v
                           for k, v in spec.get("attributes", {}).items()})
    return trainer


def main(spec: dict) -> None:
    import numpy as np
    import torch
    from nnunetv2.run.run_training import maybe_load_checkpoint

    random.seed(spec["seed"])
    np.random.seed(spec["seed"])
    torch.manual_seed(spec["seed"])
    trainer = build_trainer(spec, continue_training=spec["resume"])
    maybe_load_checkpoint(trainer, spec["resume"], False)
    trainer.run_training()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
