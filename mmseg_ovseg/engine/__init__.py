from .cpu_amp import CPUAmpOptimWrapper  # noqa: F401
