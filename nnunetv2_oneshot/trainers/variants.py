"""Short variants for tests, the demo and CPU machines: one class per setting, names that say the setting
(like nnU-Net's nnUNetTrainer_Xepochs)."""
import torch

from nnunetv2_oneshot.trainers.regaug import OneShotRegAugTrainer


class OneShotRegAugTrainer_tiny(OneShotRegAugTrainer):
    """Smoke-test budget (seconds on a CPU): proves the pipeline runs, learns next to nothing."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.registration_num_iterations = 20
        self.registration_lr = 1e-3
        self.registration_encoder_channels = (8, 16, 16, 16)
        self.registration_decoder_channels = (16, 16, 16, 8)
        self.registration_log_every = 10
        self.num_epochs = 3
        self.num_iterations_per_epoch = 10
        self.num_val_iterations_per_epoch = 1


class OneShotRegAugTrainer_cpu(OneShotRegAugTrainer):
    """Demo budget for 2 CPU cores and the CPU plan (nnUNetOneShotCPUPlans)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.registration_num_iterations = 600
        self.registration_lr = 1e-3
        self.registration_encoder_channels = (16, 32, 32, 32)
        self.registration_decoder_channels = (32, 32, 32, 16)
        self.num_epochs = 40
        self.num_iterations_per_epoch = 25
        self.num_val_iterations_per_epoch = 2
