"""LiteMedSAM's image encoder (TinyViT) without timm, and its released weights found offline (extra ``[sam]``)."""
from nnunetv2_oneshot.sam.litemedsam import (
    LITEMEDSAM_EMBED_DIM,
    LITEMEDSAM_EMBED_GRID,
    LITEMEDSAM_ENCODER_PARAMS,
    LITEMEDSAM_INPUT_SIZE,
    LiteMedSAMUnavailable,
    litemedsam_weights_path,
    load_litemedsam_encoder,
    verify_checksum,
)
from nnunetv2_oneshot.sam.tinyvit import TinyViTEncoder

__all__ = [
    "LITEMEDSAM_EMBED_DIM",
    "LITEMEDSAM_EMBED_GRID",
    "LITEMEDSAM_ENCODER_PARAMS",
    "LITEMEDSAM_INPUT_SIZE",
    "LiteMedSAMUnavailable",
    "TinyViTEncoder",
    "litemedsam_weights_path",
    "load_litemedsam_encoder",
    "verify_checksum",
]
