"""The engine's backend names, free of torch: the command line offers them before it imports
anything heavy (``streamgen --help`` stays instant)."""

BACKENDS = ("auto", "torch", "numba", "triton", "numba-cuda", "numba-cuda-grid", "graphs")
#: The persistent GPU kernels (their rings run on the clock's schedule).
KERNELS = ("triton", "numba-cuda", "numba-cuda-grid")
