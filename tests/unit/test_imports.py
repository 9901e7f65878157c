import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["data", "labeler", "reward", "policy", "training", "launch", "launch.cli",
            "data.store", "data.prompts", "data.chat", "training.models", "training.accel",
            "training.plan", "training.checkpoints", "training.metrics", "training.optim",
            "policy.sampling", "policy.generate"]
HEAVY = ["vllm", "deepspeed", "flash_attn"]
# The one door between the rooms: policy recipes and the loop reach reward models only through
# the scoring interface.
SCORING_INTERFACE = {"reward.score"}


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


def test_labeler_never_imports_torch(tmp_path):
    """Every module of the app, and the app itself built with its Rank tab and console on a
    database, as `rankloop app` builds it; `rankloop app` itself too."""
    modules = sorted(p.stem for p in (ROOT / "labeler").glob("*.py") if p.stem != "__init__")
    assert {"app", "admin", "admin_tab", "handlers", "server", "rank_api"} <= set(modules)
    code = (
        "import sys\n"
        + "".join(f"import labeler.{name}\n" for name in modules)
        + "import launch.cmd_app\n"
        + "from labeler.app import build_app\n"
        + "from labeler.handlers import LabelerService\n"
        + f"build_app(LabelerService({str(tmp_path / 'r.db')!r}, autogenerate=False))\n"
        + "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr[-3000:]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            # `from reward import score` names the module reward.score.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imports_of(package: str) -> dict[str, set[str]]:
    return {str(path.relative_to(ROOT)): imported_modules(path)
            for path in sorted((ROOT / package).rglob("*.py"))}


def room(name: str) -> str:
    return name.split(".")[0]


def test_reward_never_imports_policy():
    crossing = {f: sorted(m for m in mods if room(m) == "policy")
                for f, mods in imports_of("reward").items()}
    assert {f: m for f, m in crossing.items() if m} == {}


def test_policy_reaches_reward_only_through_the_scoring_interface():
    crossing = {}
    for f, mods in imports_of("policy").items():
        # `from reward.score import x` also yields "reward.score.x": judge by the module.
        bad = sorted(m for m in mods if room(m) == "reward" and m != "reward"
                     and not any(m == s or m.startswith(s + ".") for s in SCORING_INTERFACE))
        if bad or "reward" in mods:
            crossing[f] = bad or ["reward"]
    assert crossing == {}
    used = {m for mods in imports_of("policy").values() for m in mods if room(m) == "reward"}
    assert used, "the check found no use of the scoring interface: it would pass on anything"


def test_the_training_layer_imports_neither_room():
    crossing = {f: sorted(m for m in mods if room(m) in ("reward", "policy", "launch",
                                                         "labeler"))
                for f, mods in imports_of("training").items()}
    assert {f: m for f, m in crossing.items() if m} == {}


def test_the_import_scan_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("import os\n\ndef f():\n    from policy.rebel import train_rebel\n"
                      "    from reward import score\n")
    assert {"policy.rebel", "reward.score", "os"} <= imported_modules(source)
