"""Pure tensor math of RL post-training: no I/O, no config objects, no model.

Every component is a plain function registered by name in one of the registries below.
"""

from rlvr.algos.advantages import ADVANTAGES
from rlvr.algos.aggregation import AGGREGATIONS
from rlvr.algos.kl import KL_ESTIMATORS
from rlvr.algos.objectives import OBJECTIVES

__all__ = ["ADVANTAGES", "AGGREGATIONS", "KL_ESTIMATORS", "OBJECTIVES"]
