"""The methods the benchmark compares, and the budget every one of them gets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Method:
    #: nnU-Net trainer class that trains it (None: atlas propagation, which reuses a one-shot trainer's
    #: registration net of the same seed)
    trainer: Optional[str]
    #: "oneshot": the dataset as given (labelled case(s) + unlabelled pool); "all_labels": the pool's true
    #: labels added to the training cases (the upper bound)
    data: str = "oneshot"
    #: has a registration stage, so it also gets the registration budget
    registration: bool = False
    #: needs the LiteMedSAM weights (extra [sam])
    sam: bool = False
    #: no model at all: classical registration of the labelled case(s) onto each image (SimpleITK)
    classical: bool = False
    #: "ours": the benchmark's student recipe (budgets' optimiser and lr, no mirroring, class-prior head init);
    #: "nnunet": nnU-Net's own (SGD, its lr, mirroring, default init), only the budget's length applies
    recipe: str = "ours"
    description: str = ""

    @property
    def subfolder(self) -> str:
        """Where a seed keeps this method's models, beside the others': methods that share a trainer class
        (the upper bound, the nnU-Net-recipe baseline) need a folder of their own."""
        return "all_labels" if self.data == "all_labels" else "nnunet_recipe" if self.recipe == "nnunet" else ""


METHODS = {
    "nnUNetTrainer_1label": Method("nnUNetTrainer_oneshotBaseline",
                                   description="plain nnUNetTrainer on the labelled case(s) only"),
    "nnUNetTrainer_1label_nnunetRecipe": Method("nnUNetTrainer_oneshotBaseline", recipe="nnunet",
                                                description="plain nnUNetTrainer on the labelled case(s) only, "
                                                            "nnU-Net's own recipe (SGD, mirroring)"),
    "atlas_propagation": Method(None, description="atlas labels warped by the trained registration net"),
    "atlas_registration": Method(None, classical=True,
                                 description="classical atlas registration, no training: SimpleITK affine + "
                                             "diffeomorphic demons"),
    "OneShotRegAugTrainer": Method("OneShotRegAugTrainer", registration=True,
                                   description="registration-synthesised pairs, no distillation"),
    "OneShotDistillTrainer": Method("OneShotDistillTrainer", registration=True,
                                    description="reconstruction-guided distillation (ours)"),
    "OneShotDistillTrainer_noHint": Method("OneShotDistillTrainer_noHint", registration=True,
                                           description="ablation: lambda_hint = 0"),
    "OneShotDistillTrainer_noRecon": Method("OneShotDistillTrainer_noRecon", registration=True,
                                            description="ablation: teacher frozen after 10% of the epochs"),
    "OneShotDistillTrainer_offline1pair": Method("OneShotDistillTrainer_offline1pair", registration=True,
                                                 description="ablation: one fixed pair per unlabelled scan"),
    "OneShotDistillTrainer_realAtlas": Method("OneShotDistillTrainer_realAtlas", registration=True,
                                              description="variant: a quarter of the samples are the unwarped "
                                                          "atlas"),
    "OneShotDistillTrainer_pseudoLabels": Method("OneShotDistillTrainer_pseudoLabels", registration=True,
                                                 description="variant: half of the samples are real pool scans "
                                                             "with their registration pseudo-labels"),
    # the method since its default moved means only; the name stays for the records made under it
    "OneShotDistillTrainer_meanShift": Method("OneShotDistillTrainer_meanShift", registration=True,
                                              description="variant: the appearance change moves structure means "
                                                          "only, not their spread"),
    "OneShotDistillTrainer_spreadMatch": Method("OneShotDistillTrainer_spreadMatch", registration=True,
                                                description="variant: the appearance change scales structure "
                                                            "spreads too (the method's old default)"),
    "OneShotDistillTrainer_selfTrain": Method("OneShotDistillTrainer_selfTrain", registration=True,
                                              description="variant: from half of the epochs on, half of the "
                                                          "samples are pool scans labelled by the student itself"),
    # registration=False: it trains no registration net, so it neither gets nor lends one (share_registration)
    "OneShotDistillTrainer_classicalReg": Method("OneShotDistillTrainer_classicalReg",
                                                 description="variant: flows from classical registration "
                                                             "(SimpleITK), no registration net"),
    "RRLMedSAMTrainer": Method("RRLMedSAMTrainer", registration=True, sam=True,
                               description="SAM-guided (LiteMedSAM) general + medical branch, auto-prompt"),
    "RRLMedSAMTrainer_noEMA": Method("RRLMedSAMTrainer_noEMA", registration=True, sam=True,
                                     description="ablation: no mutual EMA between the encoders"),
    "RRLMedSAMTrainer_noSAM": Method("RRLMedSAMTrainer_noSAM", registration=True, sam=True,
                                     description="ablation: lambda_distill = 0 (no SAM guidance)"),
    "RRLMedSAMTrainer_noAP": Method("RRLMedSAMTrainer_noAP", registration=True, sam=True,
                                    description="ablation: no auto-prompt (medical branch alone)"),
    "nnUNetTrainer_all_labels": Method("nnUNetTrainer_oneshotBaseline", data="all_labels",
                                       description="upper bound: plain nnUNetTrainer with the pool's true labels"),
}
#: the method the goals are about, and its references
OURS, ONE_LABEL, PROPAGATION, UPPER = ("OneShotDistillTrainer", "nnUNetTrainer_1label", "atlas_propagation",
                                       "nnUNetTrainer_all_labels")
#: what a user who trains nothing does today (the brief's "atlas registration")
REGISTRATION = "atlas_registration"


def training_attributes(method: Method, budget: dict) -> dict:
    """Trainer attributes for one method: the same student budget and recipe for all (mirroring off,
    class-prior head init; see trainers/common.py), plus the registration budget for one-shot trainers. Nothing
    of the method: each trainer trains as its class defines it."""
    save_every = max(1, min(10, budget["epochs"] // 8))
    attrs = dict(num_epochs=budget["epochs"], num_iterations_per_epoch=budget["iterations"],
                 num_val_iterations_per_epoch=budget["val_iterations"],
                 # nnU-Net's default (every 50 epochs) would leave a 40-epoch run nothing to resume from, and a
                 # killed long CPU run (a 160-epoch CT model at ~100 s an epoch) should lose minutes, not half an hour
                 save_every=save_every,
                 # a snapshot every other checkpoint: Dice on held-out scans against training length after one
                 # run (benchmarks/validation_curve.py), which is how the budget's convergence is judged
                 snapshot_every=2 * save_every)
    if method.recipe == "ours":
        attrs.update(optimizer_name=budget["optimizer"], initial_lr=budget["lr"], mirror_axes=None,
                     class_prior_init=True)
    if method.sam:
        attrs.update(sam_embed_every=budget["sam_embed_every"])
    if method.registration:
        attrs.update(registration_num_iterations=budget["registration_iterations"],
                     registration_lr=budget["registration_lr"],
                     registration_encoder_channels=list(budget["registration_encoder_channels"]),
                     registration_decoder_channels=list(budget["registration_decoder_channels"]),
                     registration_log_every=max(1, budget["registration_iterations"] // 6))
    return attrs
