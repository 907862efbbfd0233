"""Training: the loop (``loop.train``), optimizer and schedule, EMA, atomic checkpoints."""
