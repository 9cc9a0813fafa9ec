from nnunetv2_oneshot.planners.cpu_planner import OneShotCPUPlanner

__all__ = ["OneShotCPUPlanner"]
