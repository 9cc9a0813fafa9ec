"""A CPU-friendly plan for one-shot data: narrow network, the whole (small) volume as the patch.

Measured (issue 3): nnU-Net's default plan for a 64x77x60 brain at 2.5 mm is 5 stages (32...320 features),
patch 64x80x64, batch 2, ~10 s per iteration on 2 cores; a 4-stage 32...256 net at 48^3 takes ~2 s.
This planner quarters the features (8...64; 0.55 s per iteration instead of 1.18 s at 16...128) and stops pooling at 8-voxel feature maps, so a <=64^3 volume
gets 4 stages. Use it with `-pl OneShotCPUPlanner`; its plans are named `nnUNetOneShotCPUPlans`
(pass `-p nnUNetOneShotCPUPlans` to train/predict) so they never replace a dataset's default nnUNetPlans.
"""
from typing import List, Tuple, Union

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner


class OneShotCPUPlanner(ExperimentPlanner):
    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "nnUNetOneShotCPUPlans",
                 overwrite_target_spacing: Union[List[float], Tuple[float, ...]] = None,
                 suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.UNet_base_num_features = 8
        self.UNet_max_features_3d = 64
        # pooling stops once a feature map edge would fall below 8 voxels: 4 stages for a 48-64^3 patch
        self.UNet_featuremap_min_edge_length = 6
