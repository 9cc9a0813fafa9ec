"""Training budgets as trainer attributes: plain dicts with no imports, so that the CLI and the benchmark can
read them without loading nnU-Net or torch. The trainer variants (trainers/variants.py) apply them."""

# student budgets (shared with the plain nnUNetTrainer twins)
TINY = dict(num_epochs=3, num_iterations_per_epoch=5, num_val_iterations_per_epoch=1, save_every=1)
# CPU: 400 iterations, sized so that the demo (both trainings) stays under 20 minutes on 2 cores
CPU = dict(num_epochs=16, num_iterations_per_epoch=25, num_val_iterations_per_epoch=2, optimizer_name="adamw",
           initial_lr=1e-2)
# the twins train with our trainers' recipe (no mirroring, class-prior head init), which only helps them
SAME_RECIPE = dict(mirror_axes=None, class_prior_init=True)
# the hint at CPU budgets: off for the first half, then ramped to λ_hint over a quarter of the epochs. At 400
# iterations any hint from the start kept all 12 deep grey structures at Dice 0 (README "What was measured")
CPU_HINT = dict(hint_start_fraction=0.5, hint_rampup_fraction=0.25)
# registration budgets: narrower net and Adam 1e-3 (the published 1e-4 needs thousands of iterations)
TINY_REG = dict(registration_num_iterations=20, registration_lr=1e-3, registration_log_every=10,
                registration_encoder_channels=(8, 16, 16, 16), registration_decoder_channels=(16, 16, 16, 8))
CPU_REG = dict(registration_num_iterations=150, registration_lr=1e-3, registration_log_every=25,
               registration_encoder_channels=(16, 32, 32, 32), registration_decoder_channels=(32, 32, 32, 16))
# SAM targets (RRLMedSAMTrainer): LiteMedSAM embeds a 256x256 slice in ~1-2 s on 2 CPU cores, so CPU budgets
# embed every 2nd (tests: 8th) slice of the distillation grid and interpolate in between; once per volume, cached
TINY_SAM = dict(sam_embed_every=8)
CPU_SAM = dict(sam_embed_every=2)
