#!/usr/bin/python3
"""Which BLAS Debian's torch multiplies with, how fast, and whether it is right.

    /usr/bin/python3 tools/blas_check.py                       # as the machine is set up
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 tools/blas_check.py

Prints the OpenBLAS kernel family (or that no OpenBLAS is loaded), the max error of a
128 x 768 x 3072 product against float64, and its speed on one thread.
"""
import ctypes
import glob
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(1)
core = "no OpenBLAS loaded (reference BLAS)"
for lib in glob.glob("/usr/lib/x86_64-linux-gnu/openblas*/libopenblas.so.0"):
    try:
        f = ctypes.CDLL(lib).openblas_get_corename
        f.restype = ctypes.c_char_p
        core = "OpenBLAS " + f().decode()
    except OSError:
        pass
a, w = torch.randn(128, 768), torch.randn(3072, 768)
err = (torch.nn.functional.linear(a, w).double() - a.double() @ w.double().T).abs().max().item()
for _ in range(3):
    torch.nn.functional.linear(a, w)
n = 20
t0 = time.perf_counter()
for _ in range(n):
    torch.nn.functional.linear(a, w)
dt = (time.perf_counter() - t0) / n
print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}: {core}, max error {err:.1e}, "
      f"{2 * 128 * 768 * 3072 / dt / 1e9:.1f} GFLOP/s")
