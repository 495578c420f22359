"""The training loop, recipes and checkpoints: the only room that wires the others together."""

from rlvr.train.config import Config, ConfigError, load_config
from rlvr.train.trainer import train

__all__ = ["Config", "ConfigError", "load_config", "train"]
