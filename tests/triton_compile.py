"""Compile the Triton kernel for a GPU architecture without a GPU (Triton's own LLVM and
ptxas, down to a cubin): catches what the interpreter cannot (types of loop-carried values,
constexpr branches). Run as a script, in a process where TRITON_INTERPRET is unset:

    python tests/triton_compile.py [compute capability, default 90]
"""

from __future__ import annotations

import os
import sys

os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from streamgen.engine.gpu import triton_kernels  # noqa: E402

FLOAT_PTRS = {"rings_ptr", "weights_ptr", "embed_ptr", "embed_bias_ptr", "head_w_ptr", "head_b_ptr",
              "head_in_ptr", "logits_ptr", "noise_ptr"}
FLOATS = {"temperature", "top_p"}

# (GENERATE, GREEDY, TOP_K, TOP_P, BLOCK_O): teacher-forced, free-running with top-k and
# top-p, greedy (the executor's output block is 16 or 32 channels)
VARIANTS = [(False, False, False, False, 32), (True, False, True, True, 32),
            (True, True, False, False, 32)]


def compile_variants(capability: int) -> None:
    fn = triton_kernels.run_block
    names = fn.arg_names
    for generate, greedy, top_k, top_p, block_o in VARIANTS:
        const = dict(GENERATE=generate, WRITE_OUT=not generate, GREEDY=greedy, TOP_K=top_k,
                     TOP_P=top_p, BLOCK_R=128, BLOCK_O=block_o, BLOCK_K=64, BLOCK_C=256)
        sig = {}
        for n in names:
            if n in const:
                sig[n] = "constexpr"
            elif n.endswith("_ptr"):
                floats = n in FLOAT_PTRS or (n == "out_ptr" and not generate)
                sig[n] = "*fp32" if floats else "*i64"
            else:
                sig[n] = "fp32" if n in FLOATS else "i32"  # Python ints below 2**31
        src = ASTSource(fn, sig, constexprs={(names.index(n),): v for n, v in const.items()})
        kernel = triton.compile(src, target=GPUTarget("cuda", capability, 32))
        assert kernel.asm["cubin"], "no cubin"
        print(f"compiled {const} for sm_{capability}")


if __name__ == "__main__":
    compile_variants(int(sys.argv[1]) if len(sys.argv) > 1 else 90)
