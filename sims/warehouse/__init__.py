"""Warehouse-v0: a multi-turn grid warehouse with persistent inventory."""

from sims.warehouse.config import SIZES, RewardWeights, WarehouseConfig, make_config
from sims.warehouse.env import REWARD_COMPONENTS, STATE_VARIABLES, WarehouseEnv
from sims.warehouse.oracle import WarehouseOracle, optimal_return, oracle_actions
from sims.warehouse.vector import WarehouseVectorEnv

__all__ = [
    "REWARD_COMPONENTS",
    "SIZES",
    "STATE_VARIABLES",
    "RewardWeights",
    "WarehouseConfig",
    "WarehouseEnv",
    "WarehouseOracle",
    "WarehouseVectorEnv",
    "make_config",
    "optimal_return",
    "oracle_actions",
]
