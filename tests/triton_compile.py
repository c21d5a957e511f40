"""Compile the Triton kernels for a GPU architecture without a GPU (Triton's own LLVM and
ptxas, down to a cubin): catches what the interpreter cannot (types of loop-carried values,
constexpr branches). Run as a script, in a process where TRITON_INTERPRET is unset:

    python tests/triton_compile.py [compute capability, default 90]

The test suite runs it with the Triton installed; each torch release pins its own (torch 2.11,
the GPU machine's: 3.6.0). To see what an older one makes of the kernels (ptxas's registers
and spills differ between releases), put that release first on the path:

    pip install --no-deps --target /tmp/triton36 triton==3.6.0
    PYTHONPATH=/tmp/triton36:. python tests/triton_compile.py

Every pointer is compiled as 16-byte aligned, as Triton's JIT specialises a launch whose
tensors are (the executors' buffers start on allocation boundaries; a caller's slice of input
classes may not, and is read one element at a time). The alignment decides the tiles'
layouts: without it, the default tiles spill 356 bytes a thread with Triton 3.6.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.backends.nvidia.compiler import get_ptxas  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from streamgen.engine.gpu import (  # noqa: E402
    fused_gate, noise_kernel, sample_kernel, triton_kernels)

FLOAT_PTRS = {"frames_ptr", "weights_ptr", "embed_ptr", "embed_bias_ptr", "head_w_ptr",
              "head_b_ptr", "logits_ptr", "noise_ptr"}
FLOATS = {"temperature", "top_p"}

# (GENERATE, GREEDY, TOP_K, TOP_P, BLOCK_K, warps): teacher-forced, free-running with top-k
# and top-p, greedy; the default model's tiles (32 x 256, 16 warps) and a narrower one
VARIANTS = [(False, False, False, False, 256, 16), (True, False, True, True, 256, 16),
            (True, True, False, False, 256, 16), (True, True, False, False, 64, 4)]


def compile_variants(capability: int) -> None:
    fn = triton_kernels.run_block
    names = fn.arg_names
    for generate, greedy, top_k, top_p, block_k, warps in VARIANTS:
        const = dict(GENERATE=generate, WRITE_OUT=not generate, GREEDY=greedy, TOP_K=top_k,
                     TOP_P=top_p, BLOCK_O=32, BLOCK_K=block_k, BLOCK_C=256, BLOCK_H=32,
                     BLOCK_W=8, BLOCK_R=32)
        sig = {}
        for n in names:
            if n in const:
                sig[n] = "constexpr"
            elif n.endswith("_ptr"):
                floats = n in FLOAT_PTRS or (n == "out_ptr" and not generate)
                sig[n] = "*fp32" if floats else "*i64"
            else:
                sig[n] = "fp32" if n in FLOATS else "i32"  # Python ints below 2**31
        kernel = triton.compile(source(fn, sig, const), target=GPUTarget("cuda", capability, 32),
                                options={"num_warps": warps})
        assert kernel.asm["cubin"], "no cubin"
        print(f"compiled {const} with {warps} warps for sm_{capability}: "
              f"{resources(kernel.asm['ptx'], capability)}")


def source(fn, sig: dict, const: dict) -> ASTSource:
    """``fn`` with argument types ``sig`` and compile-time constants ``const``, every pointer
    16-byte aligned (what the JIT's ``tt.divisibility`` attribute says of such a launch)."""
    names = fn.arg_names
    aligned = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
               if sig[n].startswith("*")}
    return ASTSource(fn, sig, constexprs={(names.index(n),): v for n, v in const.items()},
                     attrs=aligned)


def resources(ptx: str, capability: int) -> str:
    """ptxas's resource line for the kernel (registers, spills, stack)."""
    try:
        ptxas = get_ptxas(capability)
    except TypeError:  # triton < 3.6
        ptxas = get_ptxas()
    ptxas = getattr(ptxas, "path", ptxas)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "k.ptx")
        src.write_text(ptx)
        done = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{capability}a", str(src), "-o",
                               str(Path(tmp, "k.cubin"))], capture_output=True, text=True)
    lines = [ln.split("info    : ")[-1] for ln in done.stderr.splitlines()
             if "registers" in ln or "spill" in ln]
    return "; ".join(lines)


def compile_fused_gate(capability: int) -> None:
    """The graphs executor's fused gated-layer kernel (``fused_gate.gated_matmul``) in float32
    (IEEE products) and bfloat16 (tensor cores), at its largest tiles."""
    fn = fused_gate.gated_matmul
    names = fn.arg_names
    for dtype, ieee in (("fp32", True), ("bf16", False)):
        const = dict(BLOCK_B=64, BLOCK_C=64, BLOCK_K=32, IEEE=ieee)
        sig = {n: "constexpr" if n in const else f"*{dtype}" if n.endswith("_ptr") else "i32"
               for n in names}
        kernel = triton.compile(source(fn, sig, const), target=GPUTarget("cuda", capability, 32),
                                options={"num_warps": fused_gate.WARPS})
        assert kernel.asm["cubin"], "no cubin"
        print(f"compiled fused_gate {dtype} for sm_{capability}: "
              f"{resources(kernel.asm['ptx'], capability)}")


def compile_noise(capability: int) -> None:
    """The sampler's noise kernel (``noise_kernel.gumbel_kernel``) for 256 classes, with a
    seed past 63 bits and a step past 32 (the types the launcher passes them as)."""
    types = dict(out_ptr="*fp32", seed="u64", step="i64", stream="i32", streams="i32",
                 classes="i32")
    compile_one(noise_kernel.gumbel_kernel, types, dict(BLOCK_C=256), 2, capability)


#: The fused sampler's variants (GREEDY, TOP_K, TOP_P, the logits' type): plain, top-k with
#: top-p on bfloat16 logits, top-p, greedy
SAMPLERS = [(False, False, False, "fp32"), (False, True, True, "bf16"),
            (False, False, True, "fp32"), (True, False, False, "fp32")]


def compile_sampler(capability: int) -> None:
    """The fused sampler (``sample_kernel.sample_kernel``) for 256 classes, each variant."""
    for greedy, top_k, top_p, logits in SAMPLERS:
        types = dict(logits_ptr=f"*{logits}", row_stride="i32", out_ptr="*i64",
                     out_stride="i32", step_ptr="*i64", step="i64", seed="u64", classes="i32",
                     temperature="fp32", top_k="i32", top_p="fp32")
        const = dict(GREEDY=greedy, TOP_K=top_k, TOP_P=top_p, BLOCK_C=256)
        compile_one(sample_kernel.sample_kernel, types, const, sample_kernel.WARPS, capability)


def compile_one(fn, types: dict, const: dict, warps: int, capability: int) -> None:
    names = fn.arg_names
    sig = {n: "constexpr" if n in const else types[n] for n in names}
    kernel = triton.compile(source(fn, sig, const), target=GPUTarget("cuda", capability, 32),
                            options={"num_warps": warps})
    assert kernel.asm["cubin"], "no cubin"
    print(f"compiled {fn.__name__} {const} for sm_{capability}: "
          f"{resources(kernel.asm['ptx'], capability)}")


if __name__ == "__main__":
    capability = int(sys.argv[1]) if len(sys.argv) > 1 else 90
    compile_variants(capability)
    compile_fused_gate(capability)
    compile_noise(capability)
    compile_sampler(capability)
