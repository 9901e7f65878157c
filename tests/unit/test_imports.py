import subprocess
import sys

PACKAGES = ["data", "labeler", "reward", "policy", "launch", "launch.cli", "data.store",
            "data.prompts", "data.chat", "policy.models", "policy.sampling", "policy.generate"]
HEAVY = ["vllm", "deepspeed", "flash_attn"]


def test_importing_rankloop_loads_no_heavy_backend():
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in PACKAGES)
        + f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_labeler_never_imports_torch():
    code = "import sys, labeler; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "False", result.stderr
