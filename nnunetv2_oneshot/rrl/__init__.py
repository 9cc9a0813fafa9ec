"""RRL-MedSAM's pieces (METHOD.md B) that do not need nnU-Net: the inference network, mutual EMA, and the SAM
teacher targets (slice-wise embeddings, coordinates through augmentation, feature MSE)."""
from nnunetv2_oneshot.rrl.network import RRLNet, count_parameters, mutual_ema_

__all__ = ["RRLNet", "mutual_ema_", "count_parameters"]
