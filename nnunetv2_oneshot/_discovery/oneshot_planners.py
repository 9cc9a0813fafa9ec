# Installed by nnunetv2-oneshot into nnunetv2/experiment_planning/ so that `-pl` and the plans'
# experiment_planner_used lookup find our planners by name. Removed by `pip uninstall nnunetv2-oneshot`.
from nnunetv2_oneshot.planners import *  # noqa: F401,F403
