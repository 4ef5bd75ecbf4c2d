"""The training systems the benchmark suite compares, behind one interface.

Each module here (``turnwise_system``, ``rllib_ppo``, ``sb3_ppo``) exposes
``throughput(task, seconds, settings) -> dict`` and
``time_to_solve(task, budget, settings) -> dict`` (see ``common``); the suite runs
each call in a fresh process (``python -m benchmarks.systems``) so systems never
share a Ray instance, torch threads or imports.
"""
