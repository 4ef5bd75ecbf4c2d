"""turnwise simulators. Importing this package registers them with Gymnasium.

>>> import gymnasium, sims
>>> gymnasium.make("Warehouse-v0").unwrapped.config.height
6
"""

import gymnasium

WAREHOUSE_ID = "Warehouse-v0"
WAREHOUSE_MEMORY_ID = "Warehouse-Memory-v0"
LQR_ID = "LinearQuadratic-v0"
INVENTORY_ID = "Inventory-v0"

if WAREHOUSE_ID not in gymnasium.registry:
    gymnasium.register(
        id=WAREHOUSE_ID,
        entry_point="sims.warehouse.env:WarehouseEnv",
        vector_entry_point="sims.warehouse.vector:WarehouseVectorEnv",
    )

if WAREHOUSE_MEMORY_ID not in gymnasium.registry:
    from sims.warehouse.config import MEMORY_VARIANT

    gymnasium.register(
        id=WAREHOUSE_MEMORY_ID,
        entry_point="sims.warehouse.env:WarehouseEnv",
        vector_entry_point="sims.warehouse.vector:WarehouseVectorEnv",
        kwargs=MEMORY_VARIANT,
    )

if LQR_ID not in gymnasium.registry:
    gymnasium.register(
        id=LQR_ID,
        entry_point="sims.lqr:LinearQuadraticEnv",
        vector_entry_point="sims.lqr:LinearQuadraticVectorEnv",
    )

if INVENTORY_ID not in gymnasium.registry:
    gymnasium.register(
        id=INVENTORY_ID,
        entry_point="sims.inventory.env:InventoryEnv",
        vector_entry_point="sims.inventory.vector:InventoryVectorEnv",
    )
