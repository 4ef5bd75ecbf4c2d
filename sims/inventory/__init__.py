"""Inventory-v0: a warehouse orders stock for a few items whose demand drifts.

Stock, orders in transit and the demand regime persist from one episode to the next.
"""

from sims.inventory.config import REGIMES, Costs, DemandRegime, InventoryConfig, make_config
from sims.inventory.dynamics import REWARD_COMPONENTS
from sims.inventory.env import STATE_VARIABLES, InventoryEnv

__all__ = [
    "REGIMES",
    "REWARD_COMPONENTS",
    "STATE_VARIABLES",
    "Costs",
    "DemandRegime",
    "InventoryConfig",
    "InventoryEnv",
    "make_config",
]
