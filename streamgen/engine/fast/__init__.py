"""Compiled CPU backends: the per-sample loop in native code over the engine's own rings."""


def numba_available() -> bool:
    """Whether numba can be imported (the compiled CPU backend and noise need it)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True
