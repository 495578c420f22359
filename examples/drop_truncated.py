"""A new batch stage in a few lines: the worked example of docs/adding-a-method.md ("A batch stage").

Drop the groups whose completions all hit the length cap: such a group says only that the cap is
too short, and a length-sensitive estimator would learn from the truncation rather than the task.
Dropped groups are re-sampled as dynamic sampling's are (``sampling.max_rounds``).

Use it without touching rlvr:

    rlvr train --plugin examples/drop_truncated.py 'sampling.filters=["not_all_truncated"]'
"""

from __future__ import annotations

import numpy as np

from rlvr.data.samplers import GROUP_FILTERS


@GROUP_FILTERS.register("not_all_truncated", needs={"truncated"})
def not_all_truncated(rewards: np.ndarray, *, truncated: np.ndarray) -> np.ndarray:
    """keep [B]: the groups with at least one completion that ended before the length cap.

    rewards [B, G] (unused: the verdict is the lengths'), truncated [B, G] bool -> keep [B] bool.
    """
    return ~np.asarray(truncated, dtype=bool).all(axis=1)
