"""Trainers that nnU-Net's stock commands find by name (see README, "How nnU-Net finds the trainers")."""
from nnunetv2_oneshot.trainers.distill import OneShotDistillTrainer
from nnunetv2_oneshot.trainers.regaug import OneShotRegAugTrainer
from nnunetv2_oneshot.trainers.rrl import RRLMedSAMTrainer
from nnunetv2_oneshot.trainers.variants import (
    OneShotDistillTrainer_classicalReg, OneShotDistillTrainer_classicalReg_cpu, OneShotDistillTrainer_cpu,
    OneShotDistillTrainer_meanShift, OneShotDistillTrainer_meanShift_cpu,
    OneShotDistillTrainer_noHint, OneShotDistillTrainer_noHint_cpu,
    OneShotDistillTrainer_noRecon, OneShotDistillTrainer_noRecon_cpu, OneShotDistillTrainer_offline1pair,
    OneShotDistillTrainer_offline1pair_cpu, OneShotDistillTrainer_pseudoLabels, OneShotDistillTrainer_pseudoLabels_cpu,
    OneShotDistillTrainer_realAtlas, OneShotDistillTrainer_realAtlas_cpu, OneShotDistillTrainer_selfTrain,
    OneShotDistillTrainer_selfTrain_cpu, OneShotDistillTrainer_spreadMatch, OneShotDistillTrainer_spreadMatch_cpu,
    OneShotDistillTrainer_tiny, OneShotRegAugTrainer_cpu, OneShotRegAugTrainer_tiny, RRLMedSAMTrainer_cpu,
    RRLMedSAMTrainer_noAP, RRLMedSAMTrainer_noAP_cpu, RRLMedSAMTrainer_noEMA, RRLMedSAMTrainer_noEMA_cpu,
    RRLMedSAMTrainer_noSAM, RRLMedSAMTrainer_noSAM_cpu, RRLMedSAMTrainer_tiny, nnUNetTrainer_oneshotBaseline,
    nnUNetTrainer_oneshotCPU, nnUNetTrainer_oneshotTiny)

__all__ = [
    "OneShotRegAugTrainer", "OneShotRegAugTrainer_tiny", "OneShotRegAugTrainer_cpu",
    "OneShotDistillTrainer", "OneShotDistillTrainer_tiny", "OneShotDistillTrainer_cpu",
    "OneShotDistillTrainer_noHint", "OneShotDistillTrainer_noRecon", "OneShotDistillTrainer_offline1pair",
    "OneShotDistillTrainer_noHint_cpu", "OneShotDistillTrainer_noRecon_cpu",
    "OneShotDistillTrainer_offline1pair_cpu", "OneShotDistillTrainer_realAtlas",
    "OneShotDistillTrainer_realAtlas_cpu", "OneShotDistillTrainer_pseudoLabels",
    "OneShotDistillTrainer_pseudoLabels_cpu", "OneShotDistillTrainer_classicalReg",
    "OneShotDistillTrainer_classicalReg_cpu", "OneShotDistillTrainer_meanShift", "OneShotDistillTrainer_meanShift_cpu",
    "OneShotDistillTrainer_spreadMatch", "OneShotDistillTrainer_spreadMatch_cpu",
    "OneShotDistillTrainer_selfTrain", "OneShotDistillTrainer_selfTrain_cpu",
    "nnUNetTrainer_oneshotBaseline", "nnUNetTrainer_oneshotTiny",
    "nnUNetTrainer_oneshotCPU", "RRLMedSAMTrainer", "RRLMedSAMTrainer_noEMA", "RRLMedSAMTrainer_noAP",
    "RRLMedSAMTrainer_tiny", "RRLMedSAMTrainer_cpu", "RRLMedSAMTrainer_noEMA_cpu", "RRLMedSAMTrainer_noAP_cpu",
    "RRLMedSAMTrainer_noSAM", "RRLMedSAMTrainer_noSAM_cpu",
]
