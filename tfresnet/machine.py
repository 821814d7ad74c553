"""What machine this is: its CPU's model name and feature flags, read once from /proc/cpuinfo
(Linux), and its memory; behind the dtype choice, the hardware lines and the memory guard.
"""

import dataclasses
import functools
import os
import platform


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    model: str  # "AMD EPYC 9B14", or the platform's processor string where /proc is missing
    flags: frozenset  # e.g. {"avx512f", "avx512_bf16", "amx_bf16", ...}; empty where unknown

    def describe(self) -> str:
        """ "2-core x86_64 CPU (AMD EPYC 9B14, AVX-512, AVX512_BF16)": cores, model, the
        features that decide speed here."""
        features = [name for flag, name in _NOTABLE if flag in self.flags]
        inside = ", ".join([self.model, *features])
        return f"{os.cpu_count()}-core {platform.machine()} CPU ({inside})"


_NOTABLE = (("avx512f", "AVX-512"), ("avx512_bf16", "AVX512_BF16"), ("amx_bf16", "AMX-BF16"))


@functools.cache
def cpu_info(path: str = "/proc/cpuinfo") -> CpuInfo:
    """The first processor's model name and flags from `path`."""
    default = platform.processor() or platform.machine()
    model, flags = default, frozenset()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == default:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = frozenset(value.split())
    except OSError:
        pass
    return CpuInfo(model, flags)


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the platform does not say (Windows)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    return memory if memory > 0 else None


def check_memory(need: int, what: str, fix: str, error: type[Exception] = ValueError) -> None:
    """Raises `error` when `what` needs more than this machine's memory (`need` bytes), before
    anything is allocated: allocating it would swap for hours or end in an OOM kill. Silent
    where the platform does not say how much memory there is."""
    have = physical_memory()
    if have is not None and need > have:
        raise error(
            f"{what} needs at least {_about(need >> 30)} GiB of memory, more than this "
            f"machine's {have / 2**30:.1f} GiB; {fix}."
        )


def _about(number: int) -> str:
    """An int as a message shows it: with thousands separators, or as 2.6e15 when longer (a
    float could overflow)."""
    digits = str(number)
    return f"{number:,}" if number < 10**15 else f"{digits[0]}.{digits[1]}e{len(digits) - 1}"
