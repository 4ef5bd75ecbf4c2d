"""The external evaluator: fixed seeds, oracle baseline, eval-vs-train divergence."""
