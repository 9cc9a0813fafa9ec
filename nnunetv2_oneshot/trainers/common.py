"""Pieces shared by our trainers and by the plain-nnUNetTrainer baselines they are compared with."""
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler


class OptimizerChoice:
    """Mixin: ``optimizer_name`` "sgd" (nnU-Net's default: SGD, Nesterov, momentum 0.99) or "adamw"; both
    with nnU-Net's poly lr schedule from ``initial_lr``. Short CPU budgets use AdamW 1e-3. Measured on the
    brain atlas (fitting one scan, 200 iterations): SGD 1e-2 cortex/WM Dice 0.56/0.77 and deep grey 0.00,
    AdamW 1e-3 0.88/0.88 and deep grey starting. The optimiser covers ``optimizer_parameters()``."""

    optimizer_name = "sgd"

    def optimizer_parameters(self):
        return list(self.network.parameters())

    def configure_optimizers(self):
        params = self.optimizer_parameters()
        if self.optimizer_name == "sgd":
            optimizer = torch.optim.SGD(params, self.initial_lr, weight_decay=self.weight_decay, momentum=0.99,
                                        nesterov=True)
        elif self.optimizer_name == "adamw":
            optimizer = torch.optim.AdamW(params, self.initial_lr, weight_decay=self.weight_decay)
        else:
            raise ValueError(f"optimizer_name must be 'sgd' or 'adamw', got {self.optimizer_name!r}")
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)
