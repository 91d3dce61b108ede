"""What machine a benchmark ran on: enough to tell whether two result files compare."""

import os
import platform
import socket

# ISA extensions that decide which kernels a CPU backend (kiln's or a peer's) can use.
FLAGS_OF_INTEREST = ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                     "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve"]


def _cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return "", set(), 0
    model, flags, cores = "", set(), set()
    physical = "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and not model:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "physical id":
            physical = value
        elif key == "core id":
            cores.add((physical, value))
    return model, flags, len(cores)


def _meminfo_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def describe():
    model, flags, physical_cores = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "host": socket.gethostname(),
        "cpu": model or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "isa": [f for f in FLAGS_OF_INTEREST if f in flags],
        "physical_cores": physical_cores or None,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,  # what this process may run on (containers and taskset shrink it)
        "memory_gib": _meminfo_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "virtualized": "hypervisor" in flags,
    }
