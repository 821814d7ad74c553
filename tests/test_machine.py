"""The one /proc/cpuinfo reader, on files written here."""

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
