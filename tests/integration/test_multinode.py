"""The multi-node config (launch/configs/zero3-multinode.yaml) for real: two "machines" on
localhost (machine ranks 0 and 1, one CPU process each, gloo), each started with its own
`accelerate launch` as on two nodes, train the same loss as one process."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from launch.cli import main
from training.metrics import read_metrics
from tests.integration.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "launch/configs/zero3-multinode.yaml"
WORDS = "apple river stone cloud green quick table music light paper window orange".split()


def pairs_file(path: Path, n: int, *, scored: bool) -> str:
    rng = random.Random(n)
    rows = []
    for i in range(n):
        def reply(extra):
            return [{"role": "assistant",
                     "content": " ".join(rng.choices(WORDS, k=rng.randint(2, 9)) + extra)}]
        row = {"prompt": [{"role": "user", "content": f"Question {i}: {rng.choice(WORDS)}?"}],
               "chosen": reply(["zebra"]), "rejected": reply([])}
        if scored:
            row |= {"score_chosen": 1.0 + (i % 3) * 0.5, "score_rejected": -0.5 + (i % 2)}
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def on_two_machines(args: list[str], timeout: int = 500) -> list[subprocess.CompletedProcess]:
    """One `accelerate launch` per machine rank, as each node runs it, against one port."""
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG),
         "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
         "--main_process_ip", "127.0.0.1", "--main_process_port", port,
         "--mixed_precision", "no", "-m", "launch.cli", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)]
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return results


def losses(output) -> list[float]:
    return [m["train/loss"] for m in read_metrics(Path(output) / "metrics.jsonl")
            if "train/loss" in m]


@pytest.mark.parametrize("recipe", ["reward", "rebel"])
def test_two_machines_train_the_loss_of_one_process(recipe, tiny_model_dir, tmp_path):
    data = pairs_file(tmp_path / "pairs.jsonl", 24, scored=recipe == "rebel")
    common = ["train", recipe, "--data", data, "--model", tiny_model_dir, "--lr", "1e-3",
              "--max-steps", "3", "--eval-fraction", "0.2", "--log-every", "1",
              "--batch-size", "2", "--save-every", "3", "--no-progress"]
    if recipe == "rebel":
        common += ["--eta", "2"]
    node0, node1 = on_two_machines([*common, "--output", str(tmp_path / "nodes")])
    assert node0.returncode == 0 and node1.returncode == 0, (node0.stderr[-3000:],
                                                             node1.stderr[-3000:])
    assert "2 processes × 2 pairs × 1 accumulation" in node0.stdout
    saved = "reward model saved to" if recipe == "reward" else "policy saved to"
    assert saved in node0.stdout and saved not in node1.stdout  # only the main process reports
    # ZeRO-3 partitions: each machine's rank wrote its own share of the checkpoint.
    [checkpoint] = (tmp_path / "nodes" / "checkpoints").iterdir()
    assert {p.name.split("_mp_")[0] for p in checkpoint.rglob("zero_pp_rank_*optim_states.pt")} \
        == {"zero_pp_rank_0", "zero_pp_rank_1"}

    assert main([*common, "--grad-accum", "2", "--output", str(tmp_path / "single")]) == 0
    nodes, single = losses(tmp_path / "nodes"), losses(tmp_path / "single")
    assert len(nodes) == 3 and nodes != [nodes[0]] * 3
    assert nodes == pytest.approx(single, abs=1e-4)
