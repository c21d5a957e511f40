"""The packaged model zoo: one folder per model (config.json, model.safetensors, README.md).

Installed as ``streamgen.models``; found with ``importlib.resources.files("streamgen.models")``.
"""
