"""`rankloop loop`: one policy iteration end to end, recorded in the store.

    1. generate k candidates per prompt with the current policy (the newest recorded
       iteration's model, else ``--model``) into a generation run; its prompts become items in
       the app's labeling queue;
    2. feedback: score the candidates with the reward model (stored in ``model_scores``), or
       wait for annotators to rank them in the app (``--feedback human``);
    3. hold out a share of the prompts for the report;
    4. train from the current policy on the other prompts: REBEL on best/worst pairs of the
       scores or rankings, or PPO against the reward model (fresh rollouts on those prompts);
    5. report on the held-out prompts: the previous policy's first candidate (from step 1)
       and one new sample from the new policy (the step 1 engine, given the new weights),
       both scored by the same reward model: mean
       reward, win rate of new over old (ties count half), KL(new ‖ old) estimated on the new
       policy's samples, mean length;
    6. record the iteration (``policy_iterations``), so the next generation, here or in the
       app, samples from the new policy (``current_policy``).

Sampling uses top_p = 1, so the responses are samples of the temperature-scaled policy whose
log-probs REBEL regresses on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from data import store
from data.policy_pairs import PairSet, require_pairs, split_held_out

ALGORITHMS = ("rebel", "ppo")
FEEDBACK = ("reward-model", "human")


@dataclass
class LoopConfig:
    db: str
    """The app's database: candidates, scores and iterations are written there."""
    output: str
    """Folder with one ``iter-N`` sub-folder per iteration."""
    scorer: str | None = None
    """Reward model, ``bt:DIR`` or ``armorm:DIR``: the feedback (``reward-model``), PPO's
    reward, and the report's judge. Optional only with human feedback and REBEL."""
    algorithm: str = "rebel"
    """``rebel`` (pairs from scores or rankings) or ``ppo`` (rollouts scored by ``scorer``)."""
    feedback: str = "reward-model"
    """What REBEL's pairs come from: ``reward-model`` scores or ``human`` rankings."""
    min_ranked: int | None = None
    """Human feedback: prompts of this iteration's run that must be ranked before training;
    None = as many as the run has training prompts (all but the held-out share)."""
    wait_minutes: float = 60.0
    """Human feedback: give up waiting after this long (training goes on if any pair exists)."""
    poll_seconds: float = 10.0
    """Human feedback: how often to look for new rankings."""
    model: str = "default"
    """The first iteration's policy; later iterations start from the newest recorded one."""
    prompts: str | None = None
    """Prompt source; None = the bundled prompts."""
    limit: int | None = None
    """Use at most this many prompts."""
    k: int = 4
    """Candidates per prompt."""
    backend: str = "auto"
    """Sampling backend: ``vllm``, ``transformers`` or ``auto``."""
    tensor_parallel_size: int = 1
    """GPUs per vLLM engine (see ``GenerateConfig``)."""
    data_parallel_size: int = 1
    """Sampling engines, each on its own GPUs (see ``GenerateConfig``)."""
    max_new_tokens: int = 256
    temperature: float = 0.8
    eval_fraction: float = 0.1
    """Share of prompts held out of training, for the report."""
    eta: float = 1.0
    """REBEL's η."""
    learning_rate: float = 3e-7
    epochs: int = 1
    """REBEL: passes over the pairs."""
    per_device_batch_size: int = 4
    """REBEL: pairs per micro-batch."""
    ppo_steps: int = 20
    """PPO: rollout-and-update steps."""
    rollout_batch_size: int = 16
    """PPO: prompts per rollout."""
    minibatch_size: int = 4
    """PPO: responses per gradient step."""
    kl_coef: float = 0.05
    """PPO: β of the per-token KL penalty."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        if self.feedback not in FEEDBACK:
            raise ValueError(f"feedback must be one of {', '.join(FEEDBACK)}")
        if self.scorer is None and (self.feedback == "reward-model" or self.algorithm == "ppo"):
            raise ValueError("a reward model (--scorer) is needed unless REBEL trains on human "
                             "rankings (--feedback human)")
        if self.algorithm == "ppo" and self.feedback == "human":
            raise ValueError("PPO learns from a reward model's scores of fresh rollouts; use "
                             "--algorithm rebel with --feedback human")
        if (self.min_ranked is not None and self.min_ranked < 1) or self.wait_minutes < 0 \
                or self.poll_seconds <= 0:
            raise ValueError("min ranked must be at least 1, wait minutes at least 0 and poll "
                             "seconds above 0")


@dataclass
class IterationReport:
    iteration: int
    algorithm: str
    feedback: str
    base_model: str
    model: str
    run_id: int
    train_pairs: int
    """REBEL: pairs trained on; PPO: prompts rolled out on."""
    held_out_prompts: int
    reward_old: float | None
    reward_new: float | None
    win_rate: float | None
    """Share of held-out prompts where the new policy's sample scored higher (ties ½)."""
    kl: float | None
    """KL(new ‖ old) per response, estimated on the new policy's samples."""
    length_old: float | None
    length_new: float | None
    seconds: float

    def line(self) -> str:
        trained_on = (f"{self.train_pairs} pairs from {self.feedback} feedback"
                      if self.algorithm == "rebel" else f"PPO on {self.train_pairs} prompts")
        head = (f"iteration {self.iteration}: policy saved to {self.model} "
                f"(from {self.base_model}; run {self.run_id}, {trained_on})")
        if self.kl is None:
            return head + "; no held-out prompts to report on"
        reward = ("" if self.reward_new is None else
                  f"mean reward {self.reward_old:.4f} → {self.reward_new:.4f}, win rate "
                  f"{self.win_rate:.3f}, ")
        return (head + f"; on {self.held_out_prompts} held-out prompts: {reward}"
                f"KL {self.kl:.4f}, length {self.length_old:.1f} → {self.length_new:.1f} tokens")


# --- the store's record of iterations -----------------------------------------------------------

def current_policy(db) -> str | None:
    return store.current_policy(db)


def next_iteration(db) -> int:
    row = db.execute("SELECT MAX(iteration) FROM policy_iterations").fetchone()
    return (row[0] or 0) + 1


def record_iteration(db, report: IterationReport, *, scorer: str | None) -> None:
    with store.transaction(db):
        db.execute(
            "INSERT INTO policy_iterations (iteration, algorithm, base_model, model, run_id, "
            "scorer, report, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [report.iteration, report.algorithm, report.base_model, report.model,
             report.run_id, scorer, json.dumps(asdict(report)), time.time()])


# --- the iteration ------------------------------------------------------------------------------

def prompt_key(messages: list[dict]) -> str:
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


def _held_out(pairs: PairSet, held_keys: set[str]) -> tuple[PairSet, PairSet]:
    train = [p for p in pairs.pairs if p.prompt_key() not in held_keys]
    held = [p for p in pairs.pairs if p.prompt_key() in held_keys]
    return PairSet(train, pairs.source, dict(pairs.dropped)), PairSet(held, pairs.source)


def wait_for_rankings(db, run_id: int, needed: int, config: LoopConfig, *,
                      say: Callable[[str], None] = print,
                      clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> int:
    """Polls the store until ``needed`` prompts of the run are ranked or ``wait_minutes`` pass;
    returns how many are ranked. The app's queue serves the run's items meanwhile."""
    from data.labeling import sync_items
    from data.policy_pairs import ranked_prompts

    sync_items(db)  # the run's prompts become rankable now, not at the app's next refresh
    deadline = clock() + 60 * config.wait_minutes
    last = -1
    while True:
        ranked = ranked_prompts(db, run_id)
        if ranked >= needed:
            return ranked
        if clock() >= deadline:
            say(f"rankloop: stopped waiting after {config.wait_minutes:g} minutes with "
                f"{ranked} of {needed} prompts ranked")
            return ranked
        if ranked != last:
            say(f"rankloop: waiting for rankings of run {run_id} in the app: {ranked} of "
                f"{needed} prompts ranked")
            last = ranked
        sleep(config.poll_seconds)


def _start_sampler(backend: str, model: str, seed: int, **parallel):
    """One engine for the whole iteration: it generates the candidates, waits through
    training, then takes the new policy's weights for the report (a vLLM start costs more than
    a weight sync). On a GPU its KV cache leaves room for training."""
    import torch

    from policy.sampling import SamplingConfig, make_sampler

    options = {"gpu_memory_utilization": 0.3} if backend == "vllm" and \
        torch.cuda.is_available() else {}
    return make_sampler(backend, model, SamplingConfig(seed=seed), **parallel, **options)


def _sample_new_policy(sampler, new_model: str, texts: list[str], config: LoopConfig):
    from transformers import AutoModelForCausalLM

    from policy.sampling import SamplingConfig

    trained = AutoModelForCausalLM.from_pretrained(new_model, dtype="auto")
    sampler.sync_weights(trained.state_dict().items())
    del trained
    sampling = SamplingConfig(k=1, temperature=config.temperature, top_p=1.0,
                              max_new_tokens=config.max_new_tokens, seed=config.seed + 1)
    return [s[0] for s in sampler.generate(texts, sampling)]


def _kl_new_old(new_model: str, old_model: str, prompt_texts: list[str], responses: list[str],
                temperature: float, batch_size: int = 8) -> float:
    """Mean over responses of log π_new(y|x) − log π_old(y|x), y sampled from π_new."""
    import torch

    from policy.logprobs import pack, sequence_logprobs
    from policy.pairs import response_token_ids
    from training.models import load_policy, load_tokenizer

    tokenizer = load_tokenizer(new_model)
    prompt_ids = tokenizer(prompt_texts, add_special_tokens=False)["input_ids"]
    response_ids = response_token_ids(tokenizer, responses)
    totals = []
    for path in (new_model, old_model):
        model = load_policy(path).eval()
        logps = []
        with torch.no_grad():
            for start in range(0, len(prompt_ids), batch_size):
                batch = pack(prompt_ids[start:start + batch_size],
                             response_ids[start:start + batch_size], tokenizer.pad_token_id)
                logps.append(sequence_logprobs(model, batch.to(model.device), temperature))
        totals.append(torch.cat(logps).cpu())
        del model
    return float((totals[0] - totals[1]).mean())


def run_iteration(config: LoopConfig, *, progress: bool = False,
                  say: Callable[[str], None] = print) -> IterationReport:
    from training.models import resolve_model
    from policy.sampling import pick_backend
    from reward.score import parse_scorer

    started = time.perf_counter()
    spec = parse_scorer(config.scorer) if config.scorer else None  # fails before any sampling
    backend = pick_backend(config.backend)
    db = store.open_store(config.db)
    iteration = next_iteration(db)
    base_model = current_policy(db) or config.model
    output = Path(config.output) / f"iter-{iteration}"

    sampler = _start_sampler(backend, resolve_model(base_model), config.seed + iteration,
                             tensor_parallel_size=config.tensor_parallel_size,
                             data_parallel_size=config.data_parallel_size)
    try:
        report = _iteration(config, db, iteration, base_model, output, spec, sampler,
                            progress=progress, say=say)
    finally:
        sampler.close()
    report.seconds = time.perf_counter() - started

    # 6. Record the iteration: the next generation samples from the new policy.
    (output / "iteration_report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    record_iteration(db, report, scorer=spec.name if spec else None)
    db.close()
    return report


def _iteration(config: LoopConfig, db, iteration: int, base_model: str, output: Path, spec,
               sampler, *, progress: bool, say) -> IterationReport:
    from data.chat import format_chat
    from data.policy_pairs import pairs_from_db
    from policy.generate import GenerateConfig, run_generation
    from training.models import load_tokenizer, resolve_model
    from policy.sampling import SamplingConfig
    from reward.score import load_scorer

    # 1. Generate k candidates per prompt with the current policy.
    generated = run_generation(GenerateConfig(
        db=config.db, prompts=config.prompts, limit=config.limit, model=base_model,
        backend=sampler.name, sampling=SamplingConfig(
            k=config.k, temperature=config.temperature, top_p=1.0,
            max_new_tokens=config.max_new_tokens, seed=config.seed + iteration)),
        sampler=sampler, progress=progress)
    run_candidates = store.candidates_for_run(db, generated.run_id)
    prompt_of = {row["prompt_id"]: store.prompt_messages(db, row["prompt_id"])
                 for row in run_candidates}

    # 2. Held-out prompts, the same split for both algorithms and both kinds of feedback.
    keys = {pid: prompt_key(m) for pid, m in prompt_of.items()}
    ordered = sorted(keys)
    _, held_idx = split_held_out([keys[p] for p in ordered], config.eval_fraction, config.seed)
    held_ids = [ordered[i] for i in held_idx]
    held_keys = {keys[p] for p in held_ids}

    # 3. Feedback: the reward model's scores (also the report's judge), or human rankings.
    scorer = load_scorer(spec) if spec else None
    if scorer is not None:
        todo = store.candidates_to_score(db, spec.name, run_id=generated.run_id)
        if todo:
            scores = scorer.score([c.messages + [{"role": "assistant", "content": c.text}]
                                   for c in todo])
            store.put_model_scores(db, [store.ModelScore(c.candidate_id, spec.name, s)
                                        for c, s in zip(todo, scores)])
    if config.feedback == "human":
        wait_for_rankings(db, generated.run_id,
                          config.min_ranked or max(1, len(keys) - len(held_ids)), config, say=say)

    # 4. Train from the current policy.
    if config.algorithm == "rebel":
        from policy.rebel import RebelConfig, train_rebel

        pairs = pairs_from_db(db, scorer=None if config.feedback == "human" else spec.name,
                              run_id=generated.run_id)
        require_pairs(pairs)
        train_pairs, held_pairs = _held_out(pairs, held_keys)
        require_pairs(train_pairs)
        summary = train_rebel(RebelConfig(
            output=str(output), model=base_model, eta=config.eta,
            temperature=config.temperature, learning_rate=config.learning_rate,
            epochs=config.epochs, per_device_batch_size=config.per_device_batch_size,
            eval_fraction=0.0, seed=config.seed, resume=False),
            pairs=train_pairs, eval_pairs=held_pairs if held_pairs.pairs else None,
            progress=progress)
        trained_on = summary.train_pairs
    else:
        from policy.ppo import PPOConfig, train_ppo

        train_prompts = [m for pid, m in prompt_of.items() if keys[pid] not in held_keys]
        if not train_prompts:
            raise ValueError("no prompts left to train on after holding out the report's")
        batch = min(config.rollout_batch_size, len(train_prompts))
        train_ppo(PPOConfig(
            output=str(output), model=base_model, total_steps=config.ppo_steps,
            rollout_batch_size=batch, minibatch_size=min(config.minibatch_size, batch),
            max_new_tokens=config.max_new_tokens, temperature=config.temperature,
            kl_coef=config.kl_coef, learning_rate=config.learning_rate, seed=config.seed,
            resume=False),
            reward_fn=lambda prompts, texts: scorer.score(
                [list(p) + [{"role": "assistant", "content": t}] for p, t in zip(prompts, texts)]),
            prompts=train_prompts, progress=progress)
        trained_on = len(train_prompts)

    # 5. Report on held-out prompts: the previous policy's first candidate of step 1 against
    #    one sample of the new policy, judged by the same reward model.
    new_model = str(output.resolve())
    report = IterationReport(iteration, config.algorithm, config.feedback, base_model,
                             new_model, generated.run_id, trained_on, len(held_ids), None,
                             None, None, None, None, None, 0.0)
    if held_ids:
        old = {row["prompt_id"]: row for row in run_candidates if row["idx"] == 0}
        held_prompts = [prompt_of[p] for p in held_ids]
        tokenizer = load_tokenizer(resolve_model(base_model))
        texts = [format_chat(tokenizer, m) for m in held_prompts]
        new = _sample_new_policy(sampler, new_model, texts, config)
        n = len(held_ids)
        if scorer is not None:
            stored = store.model_scores(db, spec.name, [old[p]["id"] for p in held_ids])
            old_scores = [stored[old[p]["id"]].score for p in held_ids]
            new_scores = scorer.score([m + [{"role": "assistant", "content": s.text}]
                                       for m, s in zip(held_prompts, new)])
            report.reward_old = sum(old_scores) / n
            report.reward_new = sum(new_scores) / n
            report.win_rate = sum(1.0 if b > a else 0.5 if b == a else 0.0
                                  for a, b in zip(old_scores, new_scores)) / n
        report.kl = _kl_new_old(new_model, resolve_model(base_model), texts,
                                [s.text for s in new], config.temperature)
        report.length_old = sum(old[p]["token_count"] for p in held_ids) / n
        report.length_new = sum(s.token_count for s in new) / n
    return report
