"""Thread-block clusters (Hopper, compute capability 9.0+) for numba-cuda kernels.

A cluster's blocks run at once on one GPU processing cluster and meet at a hardware barrier,
``barrier.cluster.arrive`` then ``barrier.cluster.wait``: the arrival releases the block's
writes, the wait acquires everyone's, and in between a block may load what does not depend
on the others. The grid kernel (``streamgen.engine.gpu.grid_kernels``) makes each stream's
blocks one cluster and uses this barrier in place of a grid barrier of atomics in global
memory.

numba-cuda has neither the instructions nor cluster launches, so:

- ``device_functions`` gives the barrier's two halves and the cluster's size as inline PTX
  (in numba's CUDA simulator: ``cudasim``'s emulation);
- ``compiled_in_clusters(blocks)`` compiles the kernels first launched inside it with
  cluster dimensions (``blocks``, 1, 1) fixed at compile time (NVVM's ``cluster_dim_*``
  annotations, PTX's ``.reqnctapercluster``), so an ordinary launch runs them in clusters.
  The kernel checks the size it got (``device_functions``' ``size``) all the same.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from functools import cache
from typing import Callable, Iterator

from streamgen.engine.gpu import simulating

#: Blocks per cluster that every cluster-capable GPU runs (larger ones are not portable).
MAX_BLOCKS = 8
#: Compute capability that brings clusters.
CAPABILITY = (9, 0)

_compiling = threading.local()  # .blocks: the cluster size of the kernels compiled now


def launch_blocks() -> int:
    """The cluster size ``compiled_in_clusters`` gives kernels compiled (or, in the simulator,
    launched) in this thread now (0: none)."""
    return getattr(_compiling, "blocks", 0)


def unavailable(capability: tuple[int, int] | None) -> str | None:
    """Why kernels cannot run in clusters here (None if they can): a GPU of compute
    ``capability`` (None: the simulator's) and this numba's hook for kernel annotations."""
    if capability is not None and tuple(capability) < CAPABILITY:
        return (f"thread-block clusters need a GPU of compute capability "
                f"{CAPABILITY[0]}.{CAPABILITY[1]} or later, not {capability[0]}.{capability[1]}")
    if capability is None:
        return None
    try:  # numba-cuda's intrinsics and its hook for kernel annotations
        from numba.cuda.cudadrv import nvvm
        from numba.cuda.extending import intrinsic  # noqa: F401
    except ImportError:
        nvvm = None
    if not hasattr(nvvm, "set_launch_bounds"):
        return ("thread-block clusters need a newer numba-cuda, one that passes kernels "
                "through nvvm.set_launch_bounds (pip install -U numba-cuda)")
    return None


def _install_annotation_hook() -> None:
    """Wrap numba-cuda's ``nvvm.set_launch_bounds``, which every kernel passes through once
    compiled, so that it also gives the kernel the cluster dimensions of
    ``compiled_in_clusters`` (idempotent)."""
    from llvmlite import ir
    from numba.cuda.cudadrv import nvvm

    if getattr(nvvm.set_launch_bounds, "adds_cluster_dims", False):
        return
    plain = nvvm.set_launch_bounds

    def set_launch_bounds(kernel, launch_bounds):
        plain(kernel, launch_bounds)
        blocks = launch_blocks()
        if blocks:
            module = kernel.module
            annotations = module.add_named_metadata("nvvm.annotations")
            for axis, size in zip("xyz", (blocks, 1, 1)):
                annotations.add(module.add_metadata(
                    (kernel, ir.MetaDataString(module, f"cluster_dim_{axis}"),
                     ir.Constant(ir.IntType(32), size))))

    set_launch_bounds.adds_cluster_dims = True
    nvvm.set_launch_bounds = set_launch_bounds


@contextmanager
def compiled_in_clusters(blocks: int) -> Iterator[None]:
    """Kernels compiled in this thread within (numba compiles a kernel at its first launch
    for each argument types) get cluster dimensions (``blocks``, 1, 1); in the simulator,
    the launches within run their blocks in clusters of ``blocks``."""
    if not 1 <= blocks <= MAX_BLOCKS:
        raise ValueError(f"clusters of 1 to {MAX_BLOCKS} blocks, not {blocks}")
    if not simulating():
        _install_annotation_hook()
    outer = launch_blocks()
    _compiling.blocks = blocks
    try:
        yield
    finally:
        _compiling.blocks = outer


def device_functions() -> tuple[Callable, Callable, Callable]:
    """The device functions ``arrive()`` and ``wait()``, the halves of the cluster barrier
    (every thread of every block of the cluster calls both, in that order), and ``size()``,
    the blocks in this block's cluster (int32)."""
    if simulating():
        from streamgen.engine.gpu import cudasim

        return cudasim.cluster_arrive, cudasim.cluster_wait, cudasim.cluster_size
    return _ptx_functions()


@cache
def _ptx_functions() -> tuple[Callable, Callable, Callable]:
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic  # numba-cuda's (``unavailable`` checks for it)

    def statement(text: str):
        """A side-effecting PTX statement that orders memory around it."""
        def typer(typingctx):
            def codegen(context, builder, sig, args):
                asm = ir.InlineAsm(ir.FunctionType(ir.VoidType(), []), text, "~{memory}",
                                   side_effect=True)
                builder.call(asm, [])
                return context.get_dummy_value()

            return types.void(), codegen

        return intrinsic(typer)

    @intrinsic
    def cluster_size(typingctx):
        def codegen(context, builder, sig, args):
            asm = ir.InlineAsm(ir.FunctionType(ir.IntType(32), []),
                               "mov.u32 $0, %cluster_nctarank;", "=r")
            return builder.call(asm, [])

        return types.int32(), codegen

    # release on arrival, acquire on the wait (the instructions' defaults); not .aligned,
    # which would promise that every thread of a warp reaches the same instruction together:
    # numba makes no such promise about where a warp reconverges
    return (statement("barrier.cluster.arrive;"), statement("barrier.cluster.wait;"),
            cluster_size)
