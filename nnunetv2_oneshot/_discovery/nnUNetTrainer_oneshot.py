# Installed by nnunetv2-oneshot into nnunetv2/training/nnUNetTrainer/ so that nnU-Net's trainer lookup
# (which imports this folder's plain modules before its subpackages) finds our trainers by name.
# Removed by `pip uninstall nnunetv2-oneshot`.
from nnunetv2_oneshot.trainers import *  # noqa: F401,F403
