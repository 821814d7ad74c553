"""The one /proc/cpuinfo reader, on files written here, and the memory guard."""

import pytest

from tfresnet import machine


def test_reads_the_model_and_flags_of_the_first_processor(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx512f avx512_bf16\n\n"
        "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n"
    )
    info = machine.cpu_info(str(path))
    assert info.model == "Test CPU 9000"
    assert info.flags == {"fpu", "avx512f", "avx512_bf16"}
    assert info.describe().endswith("CPU (Test CPU 9000, AVX-512, AVX512_BF16)")


def test_a_missing_file_means_no_flags(tmp_path):
    info = machine.cpu_info(str(tmp_path / "missing"))
    assert info.flags == frozenset() and info.model


class Refused(Exception):
    pass


def test_more_memory_than_the_machine_has_is_refused_with_the_callers_error(monkeypatch):
    monkeypatch.setattr(machine, "physical_memory", lambda: 8 << 30)
    machine.check_memory(8 << 30, "Data set 'big'", "use less", Refused)  # fits exactly
    message = "Data set 'big' needs at least 9 GiB of memory, more than this machine's 8.0 GiB; "
    with pytest.raises(Refused, match=message + "use less.$"):
        machine.check_memory(9 << 30, "Data set 'big'", "use less", Refused)
    with pytest.raises(ValueError, match=r"needs at least 2.6e90 GiB"):  # no float overflow
        machine.check_memory(26 * 10**89 << 30, "x", "y")


def test_a_platform_that_does_not_say_refuses_nothing(monkeypatch):
    monkeypatch.setattr(machine.os, "sysconf", lambda name: -1 if "PHYS" in name else 4096)
    assert machine.physical_memory() is None
    machine.check_memory(10**30, "x", "y")
    monkeypatch.delattr(machine.os, "sysconf")  # Windows
    assert machine.physical_memory() is None
