"""Run-time detection of native bf16 (kdsr.device.has_native_bf16 / auto_precision), from cpuinfo text."""

from __future__ import annotations

import torch

from kdsr.device import auto_precision, cpu_flags, has_native_bf16

AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16\n"
AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_tile amx_bf16 amx_int8\n"


def _write(tmp_path, text):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return str(path)


def test_avx2_only_cpu_is_not_native_bf16(tmp_path):
    path = _write(tmp_path, AVX2)
    assert cpu_flags(path) >= {"avx2", "fma"}
    assert not has_native_bf16("cpu", path)
    assert auto_precision("cpu", path) == "fp32"


def test_bf16_flags_need_onednn_agreement(tmp_path, monkeypatch):
    for text in (AVX512_BF16, AMX):
        path = _write(tmp_path, text)
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
        assert has_native_bf16("cpu", path)
        assert auto_precision("cpu", path) == "bf16"
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
        assert not has_native_bf16("cpu", path)


def test_unreadable_cpuinfo_means_no_native_bf16(tmp_path):
    missing = str(tmp_path / "absent")
    assert cpu_flags(missing) == frozenset()
    assert not has_native_bf16("cpu", missing)
