"""``nnunetv2-oneshot benchmark``: all methods, one budget, held-out test cases (see run.py)."""
