"""Compiled CPU backends: the per-sample loop in native code over the engine's own rings."""
