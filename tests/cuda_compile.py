"""Compile the numba-cuda kernels for a GPU architecture without a GPU: numba-cuda's NVVM down
to PTX, then ptxas (a CUDA toolkit's, or Triton's copy) down to a cubin, reporting each
variant's registers and failing on spills; catches what the simulator cannot (typing,
register pressure). It needs numba-cuda with the CUDA compiler packages (``pip install
"numba-cuda[cu13]"``, about 500 MB), so it is a script, not a test, run in a process where
NUMBA_ENABLE_CUDASIM is unset:

    python tests/cuda_compile.py [compute capability, default 90]

The grid kernel's ``cooperative`` barrier is left out: numba asks a GPU for its architecture
to compile cooperative groups.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("NUMBA_ENABLE_CUDASIM", None)  # before numba is imported

import numpy as np  # noqa: E402
from numba import boolean, cuda, float32, int64, typeof  # noqa: E402

from streamgen.engine.gpu import cluster, cuda_executor, cuda_kernels, grid_kernels  # noqa: E402

cuda_executor._numpy_shim()
I1, F1, N1 = (typeof(np.zeros(2, t)) for t in (np.int64, np.float32, np.int32))
I2, F2 = typeof(np.zeros((2, 2), np.int64)), typeof(np.zeros((2, 2), np.float32))
F3 = typeof(np.zeros((2, 2, 2), np.float32))
SAMPLING = (int64, int64, boolean, float32, int64, float32)  # noise_at .. top_p

#: ``cuda_kernels.run_block``'s arguments, as ``CudaExecutor._launch`` passes them
ONE_BLOCK = (I1, I1, int64, int64, int64, F1, I1, F1, F1, F1, int64, int64, F1, F1, int64, int64,
             F1, F1, int64, I2, F2, int64, I2, F3, I2, F3) + SAMPLING
#: ``grid_kernels.run_grid``'s, as ``GridExecutor._launch`` passes them
GRID = (I1, I1, N1, N1, int64, int64, int64, F1, I1, F1, F1, F1, int64, int64, F1, F1, int64,
        int64, F1, F1, int64, I2, F1, F2, F1, I1, int64, I2, F1, I2, F3) + SAMPLING

# (name, kernel, signature): the default's shape (C=32, windows of 320, 60 rows a step) and the
# paper models' (Seq-U-Net C=180, windows of 1,800, 148 rows; WaveNet 128 dilation channels,
# skip sum and head 512 wide), each mapping, barrier and prefetch setting
VARIANTS = [
    ("one block, lanes", lambda: cuda_kernels.build(256, 60, 256, 32, None, "lanes", True),
     ONE_BLOCK),
    ("one block, rows", lambda: cuda_kernels.build(256, 60, 256, 32, None, "rows", True),
     ONE_BLOCK),
    ("one block, WaveNet", lambda: cuda_kernels.build(256, 80, 256, 128, None, "lanes",
                                                      wavenet=(128, 512)), ONE_BLOCK),
    ("grid, default", lambda: grid_kernels.build(256, 32, 60, 256, 32, 320), GRID),
    ("grid, paper Seq-U-Net", lambda: grid_kernels.build(256, 90, 148, 256, 180, 1800), GRID),
    ("grid, paper Seq-U-Net, 512 threads",
     lambda: grid_kernels.build(512, 90, 148, 256, 180, 1800), GRID),
    ("grid, no prefetch", lambda: grid_kernels.build(256, 90, 148, 256, 180, 1800,
                                                     prefetch=False), GRID),
    ("grid, broadcast barrier", lambda: grid_kernels.build(256, 90, 148, 256, 180, 1800,
                                                           "broadcast"), GRID),
    ("grid, two blocks a multiprocessor", lambda: grid_kernels.build(
        256, 180, 148, 256, 180, 1800, resident=2), GRID),
    ("grid, paper WaveNet", lambda: grid_kernels.build(256, 128, 80, 256, 128, 256,
                                                       wavenet=(128, 512)), GRID),
    ("grid, default, cluster of 8", lambda: grid_kernels.build(256, 8, 60, 256, 32, 320,
                                                               "cluster"), GRID),
    ("grid, default, cluster of 8, whole ends", lambda: grid_kernels.build(
        256, 8, 60, 256, 32, 320, "cluster", whole_ends=True), GRID),
    ("grid, paper Seq-U-Net, whole ends", lambda: grid_kernels.build(
        256, 90, 148, 256, 180, 1800, whole_ends=True), GRID),
    ("grid, default, cluster of 4, 128 threads",
     lambda: grid_kernels.build(128, 4, 60, 256, 32, 320, "cluster"), GRID),
    ("grid, paper Seq-U-Net, cluster of 8",
     lambda: grid_kernels.build(256, 8, 148, 256, 180, 1800, "cluster"), GRID),
]


def ptxas() -> str:
    """A CUDA toolkit's ptxas on the PATH, else Triton's."""
    found = shutil.which("ptxas")
    if found:
        return found
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas().path


def main(capability: int) -> None:
    spills = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make, signature in VARIANTS:
            kernel = make()
            clustered = "cluster" in name  # compiled with its cluster dimensions
            with cluster.compiled_in_clusters(
                    int(re.search(r"cluster of (\d+)", name).group(1)) if clustered else 1):
                ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=divmod(capability, 10))
            if clustered and not (re.search(r"\.reqnctapercluster \d+, 1, 1", ptx)
                                  and "barrier.cluster.wait" in ptx):
                sys.exit(f"{name}: no cluster dimensions or cluster barrier in the PTX")
            # NVVM may write a newer PTX ISA than an older ptxas reads; the kernels use none of it
            ptx = re.sub(r"^\.version \d+\.\d+", ".version 8.8", ptx, count=1, flags=re.M)
            src = Path(tmp) / "kernel.ptx"
            src.write_text(ptx)
            report = subprocess.run([ptxas(), f"-arch=sm_{capability}", "-v", str(src), "-o",
                                     str(Path(tmp) / "kernel.cubin")],
                                    capture_output=True, text=True, check=True).stderr
            registers = re.search(r"Used (\d+) registers", report).group(1)
            spilled = sum(int(n) for n in re.findall(r"(\d+) bytes spill stores", report))
            print(f"{name:40s} sm_{capability}: {registers} registers, {spilled} bytes spilled")
            if spilled:
                spills.append(name)
    if spills:
        sys.exit(f"spills in: {', '.join(spills)}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 90)
