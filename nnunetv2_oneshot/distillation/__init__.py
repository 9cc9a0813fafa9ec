"""Teacher-student feature distillation (METHOD.md A.3), torch only."""
from nnunetv2_oneshot.distillation.hint import CosineHintLoss, DecoderFeatureTap

__all__ = ["CosineHintLoss", "DecoderFeatureTap"]
