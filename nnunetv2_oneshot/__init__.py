"""One-shot 3D segmentation for nnU-Net v2."""
__version__ = "0.1.0"
