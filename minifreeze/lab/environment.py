"""Where a run ran: the facts that decide its last digits.

A run is bit for bit reproducible on the same machine type with the same shard count, not on
every machine: the BLAS kernel OpenBLAS picks for the CPU (or `OPENBLAS_CORETYPE` forces), the
code Numba's LLVM emits for the host CPU (its vector width, fused multiply-adds) and the library
versions all change the rounding of float32 sums. So each run records them, and `report` says when
the runs of one table come from more than one environment:

    env = environment(shards=1, backend="numba")
    env["cpu"], env["blas"][0]["architecture"], env["numba_cpu"]   # 'AMD EPYC', 'Haswell', 'znver4'
    environment_key(env)      # what must agree for two runs to agree bit for bit
"""

from __future__ import annotations

import os
import platform
import sys

# Variables that change which kernels run (and so the rounding) without changing any version.
KERNEL_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NUMBA_CPU_NAME",
                    "NUMBA_CPU_FEATURES", "MKL_CBWR")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else the platform's word for it)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numba_cpu() -> str | None:
    """The CPU name Numba's LLVM compiles for (e.g. 'znver4', 'skylake-avx512')."""
    try:
        import llvmlite.binding as llvm
        return os.environ.get("NUMBA_CPU_NAME") or llvm.get_host_cpu_name()
    except Exception:  # llvmlite missing or broken: the run itself would say so
        return None


def blas_info() -> list[dict]:
    """threadpoolctl's view of NumPy's BLAS: library, version, kernel architecture.

    Only the BLAS inside NumPy's own folders when there is one (a wheel's bundled OpenBLAS): what
    else is loaded (SciPy's copy, say) depends on what the process imported, not on the run."""
    import numpy
    from threadpoolctl import threadpool_info
    libs = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    home = os.path.dirname(os.path.abspath(numpy.__file__))
    own = [lib for lib in libs if str(lib.get("filepath", "")).startswith((home + os.sep,
                                                                          home + ".libs"))]
    return [{k: lib.get(k) for k in ("internal_api", "version", "architecture",
                                     "threading_layer")} for lib in (own or libs)]


def environment(*, shards: int | None = None, backend: str | None = None) -> dict:
    """What decides a run's rounding, as a JSON-ready dict (recorded in metrics.json)."""
    import numba
    import numpy
    env = {"cpu": cpu_model(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "system": platform.system(), "python": platform.python_version(),
           "numpy": numpy.__version__, "numba": numba.__version__, "numba_cpu": numba_cpu(),
           "blas": blas_info(), "shards": shards, "backend": backend,
           "variables": {k: os.environ[k] for k in KERNEL_VARIABLES if k in os.environ},
           "byteorder": sys.byteorder}
    if backend == "cuda":  # the GPU decides the rounding of a device run; imported only now
        from minifreeze import kernels_cuda
        env["gpu"] = kernels_cuda.device_info()
    return env


def environment_key(env: dict | None) -> str:
    """One line naming what must agree for two runs to agree bit for bit (the CPU, the kernels
    chosen for it, the versions, the shard count and backend); 'unrecorded' for older runs."""
    if not env:
        return "unrecorded"
    # The BLAS library and the kernels it chose: the version follows from NumPy's for a wheel,
    # and which other copies a process had loaded (SciPy's) does not matter.
    blas = ", ".join(sorted({f"{b.get('internal_api')} {b.get('architecture')} kernels"
                             for b in env.get("blas", [])})) or "no BLAS seen"
    var = " ".join(f"{k}={v}" for k, v in sorted(env.get("variables", {}).items()))
    card = env.get("gpu")
    gpu = (f", {card.get('name')} (driver {card.get('driver')}, numba-cuda "
           f"{card.get('numba_cuda')})" if card else "")
    return (f"{env.get('cpu')} ({env.get('numba_cpu')}), numpy {env.get('numpy')}, numba "
            f"{env.get('numba')}, {blas}{', ' + var if var else ''}, {env.get('shards')} "
            f"shard(s), {env.get('backend')}{gpu}")
