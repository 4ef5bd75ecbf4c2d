"""The central learner: consumes Arrow transition batches, updates and checkpoints."""
