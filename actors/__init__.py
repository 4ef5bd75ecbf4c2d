"""Rollout actors: step simulators with a CPU copy of the policy, emit Arrow batches."""
