"""Trainers that nnU-Net's stock commands find by name (see README, "How nnU-Net finds the trainers")."""
from nnunetv2_oneshot.trainers.regaug import OneShotRegAugTrainer
from nnunetv2_oneshot.trainers.variants import OneShotRegAugTrainer_cpu, OneShotRegAugTrainer_tiny

__all__ = ["OneShotRegAugTrainer", "OneShotRegAugTrainer_tiny", "OneShotRegAugTrainer_cpu"]
