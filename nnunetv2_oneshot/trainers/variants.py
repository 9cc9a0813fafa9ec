"""Variants: one class per setting, with names that say the setting (like nnU-Net's nnUNetTrainer_Xepochs).

Ablations override method knobs; budgets (``_tiny`` for smoke tests, ``_cpu`` for the demo on 2 CPU cores
with the CPU plan) set epochs and iterations. Every budget has a plain-nnUNetTrainer twin with the same
student budget (``nnUNetTrainer_oneshotTiny`` / ``nnUNetTrainer_oneshotCPU``): the fair baseline.
"""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_oneshot.budgets import CPU, CPU_HINT, CPU_REG, CPU_SAM, SAME_RECIPE, TINY, TINY_REG, TINY_SAM
from nnunetv2_oneshot.trainers.common import AtomicCheckpoint, ClassPriorInit, MirroringChoice, OptimizerChoice
from nnunetv2_oneshot.trainers.distill import OneShotDistillTrainer
from nnunetv2_oneshot.trainers.regaug import OneShotRegAugTrainer
from nnunetv2_oneshot.trainers.rrl import RRLMedSAMTrainer


def apply_budget(trainer, *budgets: dict):
    for budget in budgets:
        for k, v in budget.items():
            if not hasattr(trainer, k):
                raise AttributeError(f"{type(trainer).__name__} has no attribute {k}")
            setattr(trainer, k, v)


class nnUNetTrainer_oneshotBaseline(AtomicCheckpoint, ClassPriorInit, MirroringChoice, OptimizerChoice,
                                    nnUNetTrainer):
    """Plain nnUNetTrainer (trains on the labelled case(s) only) with the same optimiser, mirroring and
    head-initialisation knobs as ours, so that a budget can set both alike. With the defaults it IS
    nnUNetTrainer, except that checkpoints are written atomically."""


# ---------------------------------------------------------------- ablations of the distillation
class OneShotDistillTrainer_noHint(OneShotDistillTrainer):
    """λ_hint = 0: the teacher still trains but guides nothing."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.lambda_hint = 0.0


class OneShotDistillTrainer_noRecon(OneShotDistillTrainer):
    """No reconstruction loss after a warm-up: the teacher learns to reconstruct during the first 10% of the
    epochs, then is FROZEN and the hint distils fixed features. (Removing the teacher would be _noHint; a
    teacher never trained to reconstruct would distil random features.)"""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.teacher_train_fraction = 0.1


class OneShotDistillTrainer_offline1pair(OneShotDistillTrainer):
    """The published setting: ONE synthetic pair per unlabelled scan (atlas∘phi_i, label∘phi_i), no flow
    sampling and no appearance change, so every draw of a scan gives the same pair (nnU-Net's own
    augmentation still applies on top)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.synthesis.flow_interpolation_prob = 0.0
        self.synthesis.flow_scale_range = (1.0, 1.0)
        self.synthesis.appearance_prob = 0.0


class OneShotDistillTrainer_realAtlas(OneShotDistillTrainer):
    """A quarter of the samples are the atlas itself, unwarped, with its true label (``synthesis.atlas_prob``).
    Tests whether the student loses what the plain baseline gets from the sharp atlas: every other sample
    is the atlas resampled by a smooth flow."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.synthesis.atlas_prob = 0.25


class OneShotDistillTrainer_pseudoLabels(OneShotDistillTrainer):
    """Half of the samples are a real unlabelled scan with its registration pseudo-label (the atlas label
    warped by the exact flow; ``synthesis.pseudo_label_prob``), the other half synthetic pairs as usual.
    Tests whether that supervision on real scans, which RRLMedSAMTrainer's branches get, is its gain over
    this trainer: on the brain at 500 iterations it is not (pool Dice +0.013 ± 0.019, 3 seeds)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.synthesis.pseudo_label_prob = 0.5


class OneShotDistillTrainer_meanShift(OneShotDistillTrainer):
    """Means-only appearance change (``synthesis.appearance_match_spread = False``), which is now the method's
    default: this class is the method itself, kept so that the commands that made benchmark records under this
    name, before the default changed, still run (the converged runs' records now carry the method's name, with
    ``trained_as`` saying this one)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.synthesis.appearance_match_spread = False


class OneShotDistillTrainer_spreadMatch(OneShotDistillTrainer):
    """The method's appearance change before it moved means only: each structure's spread is scaled toward the
    subject's as well (``synthesis.appearance_match_spread = True``). The benchmark rows of
    OneShotDistillTrainer recorded before the change were trained this way."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.synthesis.appearance_match_spread = True


class OneShotDistillTrainer_classicalReg(OneShotDistillTrainer):
    """The pairs' flows from classical registration (SimpleITK affine + diffeomorphic demons, one per atlas ->
    unlabelled scan) instead of a trained registration net (``registration_backend``): stage 1 trains nothing.
    Tests whether better flows make a better student: on the benchmark pools these flows warp the atlas labels
    better than the CPU budget's net (brain 0.670 against 0.61-0.65; chest CT 0.894 against ~0.80)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.registration_backend = "classical"


class OneShotDistillTrainer_selfTrain(OneShotDistillTrainer):
    """Self-training: from half of the epochs on, half of the samples are real unlabelled scans labelled by the
    student itself, predicted anew every tenth of the epochs (``self_training_*``). The pairs show the student
    one anatomy, the atlas's (benchmarks/README, "Why the student stops at one-label nnU-Net's level"); its
    own labels of the real scans are better than their registration labels, which as samples did not help
    (``_pseudoLabels``)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.self_training_start_fraction = 0.5


# ---------------------------------------------------------------- ablations of RRL-MedSAM
class RRLMedSAMTrainer_noEMA(RRLMedSAMTrainer):
    """No mutual EMA: the general and the medical encoder never exchange weights."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mutual_ema = False


class RRLMedSAMTrainer_noSAM(RRLMedSAMTrainer):
    """λ_distill = 0: the general encoder is never pulled towards LiteMedSAM's embeddings; everything else (two
    branches, pseudo-labels, mutual EMA, auto-prompt) is the same. What the SAM guidance itself adds is the
    difference to RRLMedSAMTrainer. The distillation loss is still computed and logged, for the curve."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.lambda_distill = 0.0


class RRLMedSAMTrainer_noAP(RRLMedSAMTrainer):
    """No auto-prompt: the medical decoder predicts without the general branch's mask (the network has no
    prompt convs, so this is a class attribute: nnUNetv2_predict builds the same network)."""

    auto_prompt = False


# ---------------------------------------------------------------- budgets
def _budgeted(name: str, base: type, *budgets: dict) -> type:
    """Subclass ``base`` as ``name`` with the given budgets; assigned to a module-level name of the same
    spelling, which is what nnU-Net's lookup, output folders and checkpoints go by."""
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        apply_budget(self, *budgets)
    return type(name, (base,), {"__init__": __init__, "__doc__": f"{base.__name__} with budget {budgets}"})


nnUNetTrainer_oneshotTiny = _budgeted("nnUNetTrainer_oneshotTiny", nnUNetTrainer_oneshotBaseline, TINY, SAME_RECIPE)
nnUNetTrainer_oneshotCPU = _budgeted("nnUNetTrainer_oneshotCPU", nnUNetTrainer_oneshotBaseline, CPU, SAME_RECIPE)
OneShotRegAugTrainer_tiny = _budgeted("OneShotRegAugTrainer_tiny", OneShotRegAugTrainer, TINY, TINY_REG)
OneShotRegAugTrainer_cpu = _budgeted("OneShotRegAugTrainer_cpu", OneShotRegAugTrainer, CPU, CPU_REG)
OneShotDistillTrainer_tiny = _budgeted("OneShotDistillTrainer_tiny", OneShotDistillTrainer, TINY, TINY_REG)
OneShotDistillTrainer_cpu = _budgeted("OneShotDistillTrainer_cpu", OneShotDistillTrainer, CPU, CPU_REG, CPU_HINT)
OneShotDistillTrainer_noHint_cpu = _budgeted("OneShotDistillTrainer_noHint_cpu", OneShotDistillTrainer_noHint,
                                             CPU, CPU_REG)
OneShotDistillTrainer_noRecon_cpu = _budgeted("OneShotDistillTrainer_noRecon_cpu", OneShotDistillTrainer_noRecon,
                                              CPU, CPU_REG, CPU_HINT)
OneShotDistillTrainer_offline1pair_cpu = _budgeted("OneShotDistillTrainer_offline1pair_cpu",
                                                   OneShotDistillTrainer_offline1pair, CPU, CPU_REG, CPU_HINT)
OneShotDistillTrainer_realAtlas_cpu = _budgeted("OneShotDistillTrainer_realAtlas_cpu",
                                                OneShotDistillTrainer_realAtlas, CPU, CPU_REG, CPU_HINT)
OneShotDistillTrainer_pseudoLabels_cpu = _budgeted("OneShotDistillTrainer_pseudoLabels_cpu",
                                                   OneShotDistillTrainer_pseudoLabels, CPU, CPU_REG, CPU_HINT)
OneShotDistillTrainer_meanShift_cpu = _budgeted("OneShotDistillTrainer_meanShift_cpu",
                                                OneShotDistillTrainer_meanShift, CPU, CPU_REG, CPU_HINT)
OneShotDistillTrainer_spreadMatch_cpu = _budgeted("OneShotDistillTrainer_spreadMatch_cpu",
                                                  OneShotDistillTrainer_spreadMatch, CPU, CPU_REG, CPU_HINT)
OneShotDistillTrainer_classicalReg_cpu = _budgeted("OneShotDistillTrainer_classicalReg_cpu",
                                                   OneShotDistillTrainer_classicalReg, CPU, CPU_REG, CPU_HINT)
OneShotDistillTrainer_selfTrain_cpu = _budgeted("OneShotDistillTrainer_selfTrain_cpu",
                                                OneShotDistillTrainer_selfTrain, CPU, CPU_REG, CPU_HINT)
RRLMedSAMTrainer_tiny = _budgeted("RRLMedSAMTrainer_tiny", RRLMedSAMTrainer, TINY, TINY_REG, TINY_SAM)
RRLMedSAMTrainer_cpu = _budgeted("RRLMedSAMTrainer_cpu", RRLMedSAMTrainer, CPU, CPU_REG, CPU_SAM)
RRLMedSAMTrainer_noEMA_cpu = _budgeted("RRLMedSAMTrainer_noEMA_cpu", RRLMedSAMTrainer_noEMA, CPU, CPU_REG, CPU_SAM)
RRLMedSAMTrainer_noAP_cpu = _budgeted("RRLMedSAMTrainer_noAP_cpu", RRLMedSAMTrainer_noAP, CPU, CPU_REG, CPU_SAM)
RRLMedSAMTrainer_noSAM_cpu = _budgeted("RRLMedSAMTrainer_noSAM_cpu", RRLMedSAMTrainer_noSAM, CPU, CPU_REG, CPU_SAM)
