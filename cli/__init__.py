"""The ``streamgen`` command line, installed as ``streamgen.cli`` (a thin layer over the library)."""
