"""bench/gpu_check.py on CPU with its tiny size: every measurement the GPU run makes is taken,
with a number, so the one command for a GPU machine (well under 8 minutes on one H100 or
H200) cannot rot unnoticed."""

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def test_the_tiny_cpu_run_measures_everything_and_says_what_it_skipped(capsys):
    gpu_check = load_gpu_check()
    assert gpu_check.main(["--size", "tiny", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("measurement"):]
    for label in ("generation tok/s, per-sample seeds", "generation tok/s, one global RNG",
                  "scoring conversations/s", "reward-model training tok/s",
                  "REBEL step tok/s"):
        line = next(l for l in table.splitlines() if l.startswith(label))
        value = float(re.search(r"\s([0-9][0-9,]*\.[0-9])\s", line).group(1).replace(",", ""))
        assert value > 0, line
        assert re.search(r"\d+\.\d\d\s", line[50:]), f"no peak memory in: {line}"
    # MFU needs a GPU's peak; on CPU it is reported as not available, never made up.
    assert re.search(r"reward-model training MFU\s+n/a", table)
    assert re.search(r"REBEL step MFU\s+n/a", table)
    assert "GPU twins of the tests: no CUDA device" in out
    assert "per-sample seeds / one global RNG, generation:" in out


def test_missing_optional_packages_are_listed_as_skipped(monkeypatch):
    gpu_check = load_gpu_check()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("vllm", "deepspeed") else real(name, *a))
    assert gpu_check.missing_optional() == [
        "vllm: not installed, so no vLLM generation throughput and the vLLM GPU twins",
        "deepspeed: not installed, so no ZeRO-3 runs (training here runs in one process, no "
        "DeepSpeed)"] + (["flash_attn: not installed, so no flash-attention kernels (PyTorch "
                          "SDPA attention is used)"] if real("flash_attn") is None else [])
