"""streamgen: real-time streaming audio generation with a causal Seq-U-Net.

The library is layered: ``streamgen.nn`` holds the pure networks (offline forward,
training), ``streamgen.engine`` the incremental inference engine that reads their
weights, ``streamgen.audio`` mu-law coding and audio I/O.
"""

__version__ = "0.1.0"
