"""Speed measurements of the engine and its baselines (``streamgen bench``, ``benchmarks/``)."""
