"""`rankloop loop`: one policy iteration end to end, recorded in the store.

    1. generate k candidates per prompt with the current policy (the newest recorded
       iteration's model, else ``--model``) into a generation run;
    2. score them with the reward model (stored in ``model_scores``);
    3. build best/worst pairs; hold out a share of the prompts;
    4. train REBEL from the current policy on the other prompts' pairs;
    5. report on the held-out prompts: one sample per prompt from the previous and the new
       policy, both scored by the same reward model: mean reward, win rate of new over old
       (ties count half), KL(new ‖ old) estimated on the new policy's samples, mean length;
    6. record the iteration (``policy_iterations``), so the next generation, here or in the
       app, samples from the new policy (``current_policy``).

Sampling uses top_p = 1, so the responses are samples of the temperature-scaled policy whose
log-probs REBEL regresses on.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from data import store
from data.policy_pairs import PairSet, require_pairs, split_held_out


@dataclass
class LoopConfig:
    db: str
    """The app's database: candidates, scores and iterations are written there."""
    scorer: str
    """Reward model: ``bt:DIR`` or ``armorm:DIR``."""
    output: str
    """Folder with one ``iter-N`` sub-folder per iteration."""
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
    max_new_tokens: int = 256
    temperature: float = 0.8
    eval_fraction: float = 0.1
    """Share of prompts held out of training, for the report."""
    eta: float = 1.0
    """REBEL's η."""
    learning_rate: float = 3e-7
    epochs: int = 1
    per_device_batch_size: int = 4
    seed: int = 0


@dataclass
class IterationReport:
    iteration: int
    base_model: str
    model: str
    run_id: int
    train_pairs: int
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
        head = (f"iteration {self.iteration}: policy saved to {self.model} "
                f"(from {self.base_model}; run {self.run_id}, {self.train_pairs} pairs)")
        if self.reward_new is None:
            return head + "; no held-out prompts to report on"
        return (head + f"; on {self.held_out_prompts} held-out prompts: mean reward "
                f"{self.reward_old:.4f} → {self.reward_new:.4f}, win rate {self.win_rate:.3f}, "
                f"KL {self.kl:.4f}, length {self.length_old:.1f} → {self.length_new:.1f} tokens")


# --- the store's record of iterations -----------------------------------------------------------

def current_policy(db) -> str | None:
    return store.current_policy(db)


def next_iteration(db) -> int:
    row = db.execute("SELECT MAX(iteration) FROM policy_iterations").fetchone()
    return (row[0] or 0) + 1


def record_iteration(db, report: IterationReport, *, scorer: str,
                     algorithm: str = "rebel") -> None:
    with store.transaction(db):
        db.execute(
            "INSERT INTO policy_iterations (iteration, algorithm, base_model, model, run_id, "
            "scorer, report, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [report.iteration, algorithm, report.base_model, report.model, report.run_id,
             scorer, json.dumps(asdict(report)), time.time()])


# --- the iteration ------------------------------------------------------------------------------

def _held_out(pairs: PairSet, fraction: float, seed: int) -> tuple[PairSet, PairSet]:
    train_idx, held_idx = split_held_out([p.prompt_key() for p in pairs.pairs], fraction, seed)
    return (PairSet([pairs.pairs[i] for i in train_idx], pairs.source, dict(pairs.dropped)),
            PairSet([pairs.pairs[i] for i in held_idx], pairs.source))


def _sample_once(model: str, backend: str, texts: list[str], config: LoopConfig):
    from policy.sampling import SamplingConfig, make_sampler

    sampling = SamplingConfig(k=1, temperature=config.temperature, top_p=1.0,
                              max_new_tokens=config.max_new_tokens, seed=config.seed + 1)
    sampler = make_sampler(backend, model, sampling)
    try:
        return [s[0] for s in sampler.generate(texts, sampling)]
    finally:
        sampler.close()


def _kl_new_old(new_model: str, old_model: str, prompt_texts: list[str], responses: list[str],
                temperature: float, batch_size: int = 8) -> float:
    """Mean over responses of log π_new(y|x) − log π_old(y|x), y sampled from π_new."""
    import torch

    from policy.logprobs import pack, sequence_logprobs
    from policy.models import load_tokenizer
    from policy.rebel import load_policy, response_token_ids

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


def run_iteration(config: LoopConfig, *, progress: bool = False) -> IterationReport:
    from data.chat import format_chat
    from data.policy_pairs import pairs_from_db
    from policy.generate import GenerateConfig, run_generation
    from policy.models import load_tokenizer, resolve_model
    from policy.rebel import RebelConfig, train_rebel
    from policy.sampling import SamplingConfig, pick_backend
    from reward.score import load_scorer, parse_scorer

    started = time.perf_counter()
    spec = parse_scorer(config.scorer)  # a bad --scorer fails before any sampling
    backend = pick_backend(config.backend)
    db = store.open_store(config.db)
    iteration = next_iteration(db)
    base_model = current_policy(db) or config.model
    output = Path(config.output) / f"iter-{iteration}"

    # 1. Generate k candidates per prompt with the current policy.
    generated = run_generation(GenerateConfig(
        db=config.db, prompts=config.prompts, limit=config.limit, model=base_model,
        backend=backend, sampling=SamplingConfig(
            k=config.k, temperature=config.temperature, top_p=1.0,
            max_new_tokens=config.max_new_tokens, seed=config.seed + iteration)),
        progress=progress)

    # 2. Score the run's candidates with the reward model.
    scorer = load_scorer(spec)
    todo = store.candidates_to_score(db, spec.name, run_id=generated.run_id)
    if todo:
        scores = scorer.score([c.messages + [{"role": "assistant", "content": c.text}]
                               for c in todo])
        store.put_model_scores(db, [store.ModelScore(c.candidate_id, spec.name, s)
                                    for c, s in zip(todo, scores)])

    # 3. Best/worst pairs; hold out prompts for the report.
    pairs = pairs_from_db(db, scorer=spec.name, run_id=generated.run_id)
    require_pairs(pairs)
    train_pairs, held_pairs = _held_out(pairs, config.eval_fraction, config.seed)
    require_pairs(train_pairs)

    # 4. Train REBEL from the current policy.
    summary = train_rebel(RebelConfig(
        output=str(output), model=base_model, eta=config.eta, temperature=config.temperature,
        learning_rate=config.learning_rate, epochs=config.epochs,
        per_device_batch_size=config.per_device_batch_size, eval_fraction=0.0,
        seed=config.seed, resume=False),
        pairs=train_pairs, eval_pairs=held_pairs if held_pairs.pairs else None,
        progress=progress)

    # 5. Report on held-out prompts: previous vs new policy under the same reward model.
    new_model = str(output.resolve())
    held_prompts = list({p.prompt_key(): p.prompt for p in held_pairs.pairs}.values())
    report = IterationReport(iteration, base_model, new_model, generated.run_id,
                             summary.train_pairs, len(held_prompts), None, None, None, None,
                             None, None, 0.0)
    if held_prompts:
        tokenizer = load_tokenizer(resolve_model(base_model))
        texts = [format_chat(tokenizer, p) for p in held_prompts]
        old = _sample_once(resolve_model(base_model), backend, texts, config)
        new = _sample_once(new_model, backend, texts, config)
        old_scores = scorer.score([p + [{"role": "assistant", "content": s.text}]
                                   for p, s in zip(held_prompts, old)])
        new_scores = scorer.score([p + [{"role": "assistant", "content": s.text}]
                                   for p, s in zip(held_prompts, new)])
        n = len(held_prompts)
        report.reward_old = sum(old_scores) / n
        report.reward_new = sum(new_scores) / n
        report.win_rate = sum(1.0 if b > a else 0.5 if b == a else 0.0
                              for a, b in zip(old_scores, new_scores)) / n
        report.kl = _kl_new_old(new_model, resolve_model(base_model), texts,
                                [s.text for s in new], config.temperature)
        report.length_old = sum(s.token_count for s in old) / n
        report.length_new = sum(s.token_count for s in new) / n
    report.seconds = time.perf_counter() - started

    # 6. Record the iteration: the next generation samples from the new policy.
    (output / "iteration_report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    record_iteration(db, report, scorer=spec.name)
    db.close()
    return report
