"""`rankloop loop`: policy iterations end to end, recorded in the store, chained and resumable.

Each iteration:
    1. generate k candidates per prompt with the current policy (the newest recorded
       iteration's model, else ``--model``) into a generation run; its prompts become items in
       the app's labeling queue;
    2. feedback: score the candidates with the reward model (stored in ``model_scores``), wait
       for annotators to rank them in the app (``--feedback human``), or have simulated
       annotators rank the queue through the app's own submission path
       (``--feedback simulated:MODULE:FUNCTION``, see ``data/simulate.py``);
    3. hold out a share of the prompts for the report;
    4. train from the current policy on the other prompts (``TRAINERS``): REBEL on best/worst
       pairs of the scores or rankings, or PPO on fresh rollouts rewarded by the reward model
       (or, with simulated feedback and no reward model, by the simulated annotators' scoring
       function itself); then diagnose whether the policy moved (``policy/diagnostics.py``);
    5. report on the held-out prompts: the previous policy's first candidate (from step 1)
       and one new sample from the new policy, both judged by the reward model (or the
       simulated scoring function): mean reward, win rate of new over old (ties count half),
       KL(new ‖ old) estimated on the new policy's samples, mean length; warn when the
       iteration changed almost nothing, naming the setting to change;
    6. record the iteration (``policy_iterations``), so the next generation, here or in the
       app, samples from the new policy (``current_policy``).

``--iterations N`` chains N iterations. Each iteration writes ``iter-N/loop_state.json`` after
each step; a rerun of the same command after a crash continues the unfinished iterations at
the step they reached (generation resumes its run, training its checkpoint). After every
iteration ``loop_report.md``, ``loop_report.json`` and ``loop_report.svg`` (held-out metrics
across iterations) are rewritten in the output folder.

Sampling uses top_p = 1, so the responses are samples of the temperature-scaled policy whose
log-probs REBEL regresses on.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from data import store
from data.errors import ConfigError
from data.scored_pairs import PairSet, prompt_key, require_pairs, split_held_out
from data.simulate import SIMULATED_PREFIX

ALGORITHMS = ("rebel", "ppo")


# --- each algorithm's settings in the loop --------------------------------------------------------

@dataclass
class RebelLoopSettings:
    """REBEL in the loop. The defaults move a small model (SmolLM2-135M) within a KL budget per
    iteration; ``--recipe reference-8b`` gives the 8B reference values."""

    eta: float = 4.0
    """Target log-ratio gap per unit of reward gap. Rank rewards lie in [0, 1], so η = 1 asks
    the best candidate to gain at most 1 nat on the worst over a whole reply; 4 lets an
    iteration make the preferred replies several times likelier, within the KL budget."""
    learning_rate: float | None = None
    """None: from the model's size (``policy.rebel.LEARNING_RATES``: 2e-5 at 135M, 3e-7 at
    8B, interpolated log-log between)."""
    epochs: int = 2
    """Passes over the pairs at most; the KL budget, measured on held-out prompts, ends
    training sooner where it is reached. On SmolLM2 a second pass gained more held-out
    success than it cost (30.6 points in 3 iterations against 21.5 with one), though it fits
    the pairs it repeats far past their target gap (the diagnosis shows both)."""
    per_device_batch_size: int = 4
    """Pairs per micro-batch."""
    kl_budget: float | None = 0.8
    """Nats per response one iteration may move the policy from where it started, on the
    held-out prompts (see ``PairTrainingConfig.kl_budget``); None: every planned step runs."""


@dataclass
class DPOLoopSettings:
    """DPO in the loop (defaults as for REBEL: a KL budget per iteration)."""

    beta: float = 0.1
    """β: the strength of the pull toward the iteration's starting policy."""
    loss: str = "sigmoid"
    """``sigmoid`` (DPO) or ``ipo``."""
    learning_rate: float | None = None
    """None: from the model's size (``policy.dpo.LEARNING_RATES``: 1e-5 at 135M, 1e-6 at 8B)."""
    epochs: int = 2
    """Passes over the pairs at most, the KL budget ending training sooner where reached (on
    SmolLM2: 28.5 points of held-out success in 3 iterations, against 16.0 with one pass)."""
    per_device_batch_size: int = 4
    """Pairs per micro-batch."""
    kl_budget: float | None = 0.8
    """Nats per response one iteration may move the policy (see REBEL's)."""


@dataclass
class PPOLoopSettings:
    """PPO in the loop: fresh rollouts rewarded by the reward model or scoring function."""

    learning_rate: float | None = None
    """None: from the model's size (``policy.ppo.LEARNING_RATES``: 1e-5 at 135M, 1e-6 at 8B)."""
    steps: int = 6
    """Rollout-and-update steps per iteration."""
    rollout_batch_size: int = 16
    """Prompts per rollout."""
    minibatch_size: int = 8
    """Responses per gradient step."""
    epochs: int = 2
    """Passes over each rollout."""
    kl_coef: float = 0.05
    """Starting β of the per-token KL penalty."""
    target_kl: float | None = 0.8
    """β adapts so the KL per response to the iteration's start tracks this (PPO's own
    budget); None: β stays at ``kl_coef``."""
    kl_horizon: int = 16
    """Responses over which β can change by 20%: one rollout, so β follows the KL within an
    iteration's few steps (PPO's 10,000 suits runs of hundreds of steps)."""


ALGORITHM_SETTINGS = {"rebel": RebelLoopSettings, "dpo": DPOLoopSettings,
                      "ppo": PPOLoopSettings}

# Named sets of per-algorithm settings (``--recipe``). ``default`` moves the model the loop
# starts with by a bounded KL each iteration; ``reference-8b`` is the 8B reference recipes'
# values (REBEL's paper, DPO's and PPO's recipes at 8B), with no KL budget.
RECIPES: dict[str, dict[str, dict]] = {
    "default": {"rebel": {}, "dpo": {}, "ppo": {}},
    "reference-8b": {
        "rebel": {"eta": 1.0, "learning_rate": 3e-7, "epochs": 1, "kl_budget": None},
        "dpo": {"learning_rate": 1e-6, "epochs": 1, "kl_budget": None},
        "ppo": {"learning_rate": 1e-6, "steps": 20, "minibatch_size": 4, "epochs": 4,
                "target_kl": None, "kl_horizon": 10_000},
    },
}


def algorithm_settings(algorithm: str, recipe: str = "default", **overrides):
    """The ``recipe``'s settings for ``algorithm``, with ``overrides`` (None values ignored:
    an option left unset keeps the recipe's value)."""
    if recipe not in RECIPES:
        raise ConfigError(f"recipe must be one of {', '.join(RECIPES)}")
    cls = ALGORITHM_SETTINGS[algorithm]
    names = {f.name for f in fields(cls)}
    unknown = sorted(k for k, v in overrides.items() if v is not None and k not in names)
    if unknown:
        raise ConfigError(f"{algorithm} has no setting {', '.join(unknown)}")
    values = {**RECIPES[recipe][algorithm],
              **{k: v for k, v in overrides.items() if v is not None}}
    return cls(**values)
FEEDBACK = ("reward-model", "human", "simulated:MODULE:FUNCTION")
STEPS = ("generate", "feedback", "train", "report")


@dataclass
class LoopConfig:
    db: str
    """The app's database: candidates, scores, rankings and iterations are written there."""
    output: str
    """Folder with one ``iter-N`` sub-folder per iteration and the loop's report files."""
    scorer: str | None = None
    """Reward model, ``bt:DIR`` or ``armorm:DIR``: the feedback (``reward-model``), PPO's
    reward, and the report's judge. Optional with human or simulated feedback and REBEL, and
    with simulated feedback and PPO (the scoring function is then the reward)."""
    algorithm: str = "rebel"
    """A key of ``TRAINERS``: ``rebel`` or ``dpo`` (pairs from scores or rankings), or
    ``ppo``."""
    feedback: str = "reward-model"
    """``reward-model`` scores, ``human`` rankings made in the app, or
    ``simulated:MODULE:FUNCTION`` rankings by simulated annotators."""
    iterations: int = 1
    """Iterations to chain in one invocation (a rerun finishes an interrupted set)."""
    sim_annotators: int = 3
    """Simulated feedback: annotators."""
    sim_overlap: int = 2
    """Simulated feedback: annotators per item."""
    sim_noise: float = 1.0
    """Simulated feedback: Gumbel noise temperature on the scores (0 = exact)."""
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
    recipe: str = "default"
    """A key of ``RECIPES``: where the algorithm's settings come from when ``settings`` is
    None (``default``: sized to the model, a KL budget per iteration; ``reference-8b``: the
    8B reference values)."""
    settings: RebelLoopSettings | DPOLoopSettings | PPOLoopSettings | None = None
    """The algorithm's own settings (``ALGORITHM_SETTINGS``); None: the recipe's."""
    seed: int = 0
    previous_share: float | None = None
    """Share of each prompt's k candidates sampled from the previous policy (blind, like the
    rest), so the rankings people give anyway also judge new against previous; they are not
    trained on. None: 0.5 when people or simulated annotators rank, 0 with reward-model
    feedback. Needs k >= 3 (two current-policy candidates are left for a training pair)."""
    stop_when_not_preferred: bool = False
    """Stop after an iteration whose rankings show people no longer prefer the new policy to
    the previous one (``human_win_rate`` at or below 0.5)."""

    def learning_rate_for(self, model_path: str) -> tuple[float, str]:
        """(learning rate, why): the one set, else the algorithm's default for the size of
        the model at ``model_path``."""
        if self.settings.learning_rate is not None:
            return self.settings.learning_rate, "set"
        import importlib

        from training.models import model_parameters, size_scaled_learning_rate

        module = importlib.import_module(RECIPE_CONFIGS[self.algorithm][0])
        weights = model_parameters(model_path)
        rate = size_scaled_learning_rate(module.LEARNING_RATES, weights)
        return rate, f"from the model's size ({weights / 1e6:.0f}M weights)"

    @property
    def simulated(self) -> str | None:
        """The simulated annotators' ``MODULE:FUNCTION``, or None."""
        if self.feedback.startswith(SIMULATED_PREFIX):
            return self.feedback[len(SIMULATED_PREFIX):]
        return None

    def __post_init__(self) -> None:
        if self.algorithm not in TRAINERS:
            raise ConfigError(f"algorithm must be one of {', '.join(TRAINERS)}")
        if self.settings is None:
            self.settings = algorithm_settings(self.algorithm, self.recipe)
        elif not isinstance(self.settings, ALGORITHM_SETTINGS[self.algorithm]):
            wanted = ALGORITHM_SETTINGS[self.algorithm].__name__
            raise ConfigError(f"{self.algorithm} needs {wanted}")
        if self.feedback not in FEEDBACK[:2] and self.simulated is None:
            raise ConfigError("feedback must be reward-model, human or simulated:MODULE:FUNCTION")
        if self.simulated is not None and ":" not in self.simulated:
            raise ConfigError("simulated feedback must look like simulated:MODULE:FUNCTION")
        if self.scorer is None and self.feedback == "reward-model":
            raise ConfigError("a reward model (--scorer) is needed unless REBEL trains on human "
                             "rankings (--feedback human) or simulated annotators rank")
        if self.algorithm == "ppo" and self.feedback == "human":
            raise ConfigError("PPO learns from a reward model's scores of fresh rollouts; use "
                             "--algorithm rebel with --feedback human")
        if self.iterations < 1:
            raise ConfigError("iterations must be at least 1")
        if (self.min_ranked is not None and self.min_ranked < 1) or self.wait_minutes < 0 \
                or self.poll_seconds <= 0:
            raise ConfigError("min ranked must be at least 1, wait minutes at least 0 and poll "
                             "seconds above 0")
        if self.previous_share is not None and not 0 <= self.previous_share < 1:
            raise ConfigError("previous share must be at least 0 and below 1")


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
    judge: str | None = None
    """What scored the report's samples: the reward model or the simulated scoring function."""
    diagnosis: str | None = None
    """The training recipe's own measure of how far the policy moved."""
    diagnostics: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Set when the iteration changed almost nothing; each names the setting to change."""
    rankings: int | None = None
    """Simulated feedback: rankings the simulated annotators stored this iteration."""
    human_win_rate: float | None = None
    """People's (or simulated annotators') win rate of this iteration's starting policy (the
    one iteration ``verdict_on`` trained) over the policy before it, from this iteration's
    rankings of mixed candidates (ties half); None without such votes."""
    ci_low: float | None = None
    ci_high: float | None = None
    """95% bootstrap interval of ``human_win_rate`` (rankings resampled)."""
    human_votes: int | None = None
    """New-vs-previous candidate pairs behind ``human_win_rate``."""
    verdict_on: int | None = None
    """The iteration whose trained policy ``human_win_rate`` judges."""
    judge_win_rate: float | None = None
    """That iteration's own win rate by its judge (reward model or scoring function)."""
    settings: dict = field(default_factory=dict)
    """The algorithm's settings this iteration trained with (learning rate resolved)."""
    settings_note: str = ""
    """Which settings those were and why: the recipe, and where the learning rate came from."""

    def line(self) -> str:
        trained_on = (f"PPO on {self.train_pairs} prompts" if self.algorithm == "ppo"
                      else f"{self.algorithm.upper()} on {self.train_pairs} pairs from "
                      f"{self.feedback} feedback")
        head = (f"iteration {self.iteration}: policy saved to {self.model} "
                f"(from {self.base_model}; run {self.run_id}, {trained_on})")
        if self.diagnosis:
            head += f"; {self.diagnosis}"
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


def record_iteration(db, report: IterationReport, *, scorer: str | None) -> None:
    store.record_iteration(db, iteration=report.iteration, algorithm=report.algorithm,
                           base_model=report.base_model, model=report.model,
                           run_id=report.run_id, scorer=scorer, report=asdict(report))


# --- resuming: which steps of an iteration are done -----------------------------------------------

class IterationState:
    """``iter-N/loop_state.json``: the iteration's starting policy, run and finished steps,
    written after each step so a rerun continues where a crash stopped it."""

    def __init__(self, folder: Path, iteration: int, base_model: str, settings: dict):
        self.path = folder / "loop_state.json"
        self.data = {"iteration": iteration, "base_model": base_model, "settings": settings,
                     "done": [], "run_id": None, "train": None}
        self.resumed = False
        """True when an earlier attempt at this iteration left its state: its training
        checkpoints may be resumed."""
        if self.path.is_file():
            saved = json.loads(self.path.read_text())
            if saved.get("base_model") == base_model and saved.get("settings") == settings:
                self.data, self.resumed = saved, True
            # Different settings: a new iteration in an old folder starts over.

    def done(self, step: str) -> bool:
        return step in self.data["done"]

    def mark(self, step: str, **values) -> None:
        self.data.update(values)
        if step not in self.data["done"]:
            self.data["done"].append(step)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)  # atomic: a crash leaves the old state or the new one


def _state_settings(config: LoopConfig) -> dict:
    """What must match for an unfinished iteration to be continued."""
    keep = ("algorithm", "feedback", "scorer", "prompts", "limit", "k", "max_new_tokens",
            "temperature", "eval_fraction", "seed")
    return {k: getattr(config, k) for k in keep}


# --- the loop -----------------------------------------------------------------------------------

def _plan_path(config: LoopConfig) -> Path:
    return Path(config.output) / "loop_plan.json"


def plan_iterations(config: LoopConfig, db) -> range:
    """The iterations this invocation runs: the unfinished rest of an interrupted set with the
    same count, else ``config.iterations`` new ones after the last recorded one."""
    path = _plan_path(config)
    first_new = store.next_iteration(db)
    if path.is_file():
        plan = json.loads(path.read_text())
        if plan.get("iterations") == config.iterations and first_new <= plan["last"]:
            return range(first_new, plan["last"] + 1)
    last = first_new + config.iterations - 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"iterations": config.iterations, "first": first_new,
                                "last": last}) + "\n")
    return range(first_new, last + 1)


def run_loop(config: LoopConfig, *, progress: bool = False,
             say: Callable[[str], None] = print) -> list[IterationReport]:
    """Runs (or continues) ``config.iterations`` iterations; prints each report line and
    warning, and rewrites the report table and plot after each iteration."""
    from reward.score import parse_scorer

    if config.scorer:
        parse_scorer(config.scorer)  # fails before any sampling
    if config.simulated:
        from data.simulate import load_score_fn

        load_score_fn(config.simulated)
    db = store.open_store(config.db)
    planned = plan_iterations(config, db)
    db.close()
    reports = []
    for _ in planned:
        report = run_iteration(config, progress=progress, say=say)
        say(report.line())
        for warning in report.warnings:
            say(f"rankloop: warning: {warning}")
        db = store.open_store(config.db)
        write_loop_report(Path(config.output), store.iteration_reports(db))
        db.close()
        reports.append(report)
        if config.stop_when_not_preferred and report.human_win_rate is not None \
                and report.human_win_rate <= 0.5:
            say(f"rankloop: stopping: people preferred iteration {report.verdict_on}'s policy "
                f"to the one before it in only {report.human_win_rate:.3f} of "
                f"{report.human_votes} comparisons (--stop-when-not-preferred)")
            break
    return reports


def run_iteration(config: LoopConfig, *, progress: bool = False,
                  say: Callable[[str], None] = print) -> IterationReport:
    """Runs the next iteration (or continues an unfinished one) and records it."""
    from reward.score import parse_scorer

    started = time.perf_counter()
    spec = parse_scorer(config.scorer) if config.scorer else None  # fails before any sampling
    db = store.open_store(config.db)
    iteration = store.next_iteration(db)
    base_model = current_policy(db) or config.model
    output = Path(config.output) / f"iter-{iteration}"
    state = IterationState(output, iteration, base_model, _state_settings(config))
    if state.data["done"]:
        say(f"rankloop: continuing iteration {iteration} after {state.data['done'][-1]}")
    sampler = _LazySampler(config, base_model, config.seed + iteration)
    try:
        report = _iteration(config, db, iteration, base_model, output, spec, sampler, state,
                            progress=progress, say=say)
    finally:
        sampler.close()
    report.seconds = time.perf_counter() - started

    # 6. Record the iteration: the next generation samples from the new policy.
    (output / "iteration_report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    record_iteration(db, report, scorer=spec.name if spec else None)
    db.close()
    return report


class _LazySampler:
    """One engine for the whole iteration, started on first use: it generates the candidates,
    waits through training, then takes the new policy's weights for the report (a vLLM start
    costs more than a weight sync). A resumed iteration that needs no sampling starts none."""

    def __init__(self, config: LoopConfig, model: str, seed: int):
        self.config, self.model, self.seed = config, model, seed
        self._sampler = None

    def get(self):
        if self._sampler is None:
            import torch

            from training.models import resolve_model
            from policy.sampling import SamplingConfig, make_sampler, pick_backend

            backend = pick_backend(self.config.backend)
            options = {"gpu_memory_utilization": 0.3} if backend == "vllm" and \
                torch.cuda.is_available() else {}
            self._sampler = make_sampler(
                backend, resolve_model(self.model), SamplingConfig(seed=self.seed),
                tensor_parallel_size=self.config.tensor_parallel_size,
                data_parallel_size=self.config.data_parallel_size, **options)
        return self._sampler

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None


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
    from data.scored_pairs import ranked_prompts

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


def _sample_new_policy(sampler, new_model: str, texts: list[str], config: LoopConfig):
    from transformers import AutoModelForCausalLM

    from policy.sampling import SamplingConfig

    trained = AutoModelForCausalLM.from_pretrained(new_model, dtype="auto")
    sampler.sync_weights(trained.state_dict().items())
    del trained
    sampling = SamplingConfig(k=1, temperature=config.temperature, top_p=1.0,
                              max_new_tokens=config.max_new_tokens, seed=config.seed + 1)
    return [s[0] for s in sampler.generate(texts, sampling)]


def kl_new_old(new_model: str, old_model: str, prompt_texts: list[str], responses: list[str],
               temperature: float, batch_size: int = 8) -> float:
    """KL(π_new ‖ π_old) per response, y sampled from π_new: the mean of Schulman's k3,
    r − 1 − log r with r = π_old(y|x) / π_new(y|x). Unbiased like the plain mean of −log r
    (k1), but never negative per response, so a handful of held-out prompts cannot report a
    negative KL or hide a move behind one sample's sign."""
    import torch

    from policy.logprobs import pack, sequence_logprobs
    from policy.pair_batches import response_token_ids
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
    from policy.losses import kl_estimators

    # In double precision: e^(log r) of a whole sequence.
    return float(kl_estimators(totals[0].double(), totals[1].double())["k3"].mean())


_kl_new_old = kl_new_old  # the name earlier callers used


# --- training: one entry per algorithm ------------------------------------------------------------

@dataclass
class TrainContext:
    """What a trainer needs from the iteration."""

    config: LoopConfig
    db: object
    run_id: int
    base_model: str
    output: Path
    scorer_name: str | None
    """Stored scores to build REBEL's pairs from (None: the rankings)."""
    reward_fn: Callable | None
    """PPO's reward for fresh rollouts: (prompts, responses) → floats."""
    train_prompts: list[list[dict]]
    held_keys: set[str]
    progress: bool
    resume: bool
    """Continue from a checkpoint an interrupted attempt left in ``output``."""
    verdict_only: set[int] = field(default_factory=set)
    """The previous policy's candidates: ranked for the verdict, never trained on (REBEL and
    DPO regress on samples of the policy they start from)."""


@dataclass
class TrainResult:
    trained_on: int
    diagnosis: object
    """A ``policy.diagnostics.Diagnosis``."""
    settings: dict = field(default_factory=dict)
    """The algorithm's settings as trained with (the learning rate resolved)."""
    settings_note: str = ""
    """Which settings were used and why (recipe, the learning rate's source)."""


def _scored_pairs(ctx: TrainContext):
    """This iteration's scored pairs for training, and the held-out prompts' pairs (None when
    there are none) for evaluation."""
    from data.scored_pairs import pairs_from_db

    pairs = pairs_from_db(ctx.db, scorer=ctx.scorer_name, run_id=ctx.run_id,
                          exclude=ctx.verdict_only)
    require_pairs(pairs)
    train_pairs, held_pairs = _held_out(pairs, ctx.held_keys)
    require_pairs(train_pairs)
    return train_pairs, held_pairs if held_pairs.pairs else None


def _used_settings(ctx: TrainContext) -> tuple[float, dict, str]:
    """(learning rate, the algorithm's settings as trained with, why): for the report."""
    from training.models import resolve_model

    config = ctx.config
    rate, why = config.learning_rate_for(resolve_model(ctx.base_model))
    used = {**asdict(config.settings), "learning_rate": rate}
    changed = config.settings != algorithm_settings(config.algorithm, config.recipe)
    note = (f"{config.algorithm.upper()} settings of the {config.recipe} recipe"
            f"{' with changes' if changed else ''}; learning rate {rate:.3g} {why}")
    return rate, used, note


def _budget_line(summary) -> str:
    return f"; {summary.stopped_early}" if summary.stopped_early else ""


def _train_rebel(ctx: TrainContext) -> TrainResult:
    from policy.diagnostics import rebel_diagnosis
    from policy.rebel import RebelConfig, train_rebel
    from training.metrics import read_metrics

    config, settings = ctx.config, ctx.config.settings
    rate, used, note = _used_settings(ctx)
    train_pairs, eval_pairs = _scored_pairs(ctx)
    summary = train_rebel(RebelConfig(
        output=str(ctx.output), model=ctx.base_model, eta=settings.eta,
        temperature=config.temperature, learning_rate=rate, epochs=settings.epochs,
        per_device_batch_size=settings.per_device_batch_size, kl_budget=settings.kl_budget,
        eval_fraction=0.0, seed=config.seed, log_every=1, resume=ctx.resume),
        pairs=train_pairs, eval_pairs=eval_pairs, progress=ctx.progress)
    gaps = [p.reward_gap for p in train_pairs.pairs]
    held_gaps = [p.reward_gap for p in eval_pairs.pairs] if eval_pairs else []
    diagnosis = rebel_diagnosis(
        read_metrics(ctx.output / "metrics.jsonl"), eta=settings.eta,
        mean_reward_gap=sum(gaps) / len(gaps), learning_rate=rate, epochs=settings.epochs,
        held_out_reward_gap=sum(held_gaps) / len(held_gaps) if held_gaps else None)
    diagnosis.summary += _budget_line(summary)
    return TrainResult(summary.train_pairs, diagnosis, used, note)


def _train_dpo(ctx: TrainContext) -> TrainResult:
    from policy.diagnostics import dpo_diagnosis
    from policy.dpo import DPOConfig, train_dpo
    from training.metrics import read_metrics

    config, settings = ctx.config, ctx.config.settings
    rate, used, note = _used_settings(ctx)
    train_pairs, eval_pairs = _scored_pairs(ctx)
    summary = train_dpo(DPOConfig(
        output=str(ctx.output), model=ctx.base_model, beta=settings.beta,
        loss_type=settings.loss, learning_rate=rate, epochs=settings.epochs,
        per_device_batch_size=settings.per_device_batch_size, kl_budget=settings.kl_budget,
        eval_fraction=0.0, seed=config.seed, log_every=1, resume=ctx.resume),
        pairs=train_pairs, eval_pairs=eval_pairs, progress=ctx.progress)
    logged = [m for m in read_metrics(ctx.output / "metrics.jsonl")
              if "train/reward_margin" in m]
    metrics = read_metrics(ctx.output / "metrics.jsonl")
    diagnosis = dpo_diagnosis([m["train/reward_margin"] for m in logged],
                              [m["train/kl"] for m in logged if "train/kl" in m],
                              learning_rate=rate,
                              held_out_kls=[m["eval/kl"] for m in metrics if "eval/kl" in m])
    diagnosis.summary += _budget_line(summary)
    return TrainResult(summary.train_pairs, diagnosis, used, note)


def _train_ppo(ctx: TrainContext) -> TrainResult:
    from policy.diagnostics import ppo_diagnosis
    from policy.ppo import PPOConfig, train_ppo
    from training.metrics import read_metrics

    config, settings = ctx.config, ctx.config.settings
    rate, used, note = _used_settings(ctx)
    if not ctx.train_prompts:
        raise ConfigError("no prompts left to train on after holding out the report's")
    batch = min(settings.rollout_batch_size, len(ctx.train_prompts))
    minibatch = min(settings.minibatch_size, batch)
    batch -= batch % minibatch
    train_ppo(PPOConfig(
        output=str(ctx.output), model=ctx.base_model, total_steps=settings.steps,
        rollout_batch_size=batch, minibatch_size=minibatch, ppo_epochs=settings.epochs,
        max_new_tokens=config.max_new_tokens, temperature=config.temperature,
        kl_coef=settings.kl_coef, target_kl=settings.target_kl,
        kl_horizon=settings.kl_horizon, learning_rate=rate,
        seed=config.seed, resume=ctx.resume),
        reward_fn=ctx.reward_fn, prompts=ctx.train_prompts, progress=ctx.progress)
    diagnosis = ppo_diagnosis(read_metrics(ctx.output / "metrics.jsonl"),
                              learning_rate=rate, steps=settings.steps)
    return TrainResult(len(ctx.train_prompts), diagnosis, used, note)


# Each algorithm's recipe config, whose defaults the loop keeps (module, class).
RECIPE_CONFIGS = {"rebel": ("policy.rebel", "RebelConfig"), "dpo": ("policy.dpo", "DPOConfig"),
                  "ppo": ("policy.ppo", "PPOConfig")}

# Adding an algorithm: one entry here and in RECIPE_CONFIGS (and its name in the CLI's
# --algorithm choices).
TRAINERS: dict[str, Callable[[TrainContext], TrainResult]] = {
    "rebel": _train_rebel,
    "dpo": _train_dpo,
    "ppo": _train_ppo,
}


# --- one iteration --------------------------------------------------------------------------------

def _iteration(config: LoopConfig, db, iteration: int, base_model: str, output: Path, spec,
               sampler: _LazySampler, state: IterationState, *, progress: bool,
               say) -> IterationReport:
    from data.chat import format_chat
    from policy.diagnostics import held_out_diagnosis
    from policy.generate import GenerateConfig, run_generation
    from training.models import load_tokenizer, resolve_model
    from policy.sampling import SamplingConfig, pick_backend
    from reward.score import load_scorer

    # 1. Generate k candidates per prompt with the current policy (a rerun of an interrupted
    #    generation samples only the prompts still missing).
    previous, n_previous = previous_mix(config, db, base_model)
    if not state.done("generate"):
        generated = run_generation(GenerateConfig(
            db=config.db, prompts=config.prompts, limit=config.limit, model=base_model,
            previous_model=previous, previous_count=n_previous,
            backend=pick_backend(config.backend), sampling=SamplingConfig(
                k=config.k, temperature=config.temperature, top_p=1.0,
                max_new_tokens=config.max_new_tokens, seed=config.seed + iteration)),
            sampler=sampler.get(), progress=progress)
        state.mark("generate", run_id=generated.run_id)
    run_id = state.data["run_id"]
    run_candidates = store.candidates_for_run(db, run_id)
    prompt_of = {row["prompt_id"]: store.prompt_messages(db, row["prompt_id"])
                 for row in run_candidates}

    # 2. Held-out prompts, the same split for every algorithm and kind of feedback.
    keys = {pid: prompt_key(m) for pid, m in prompt_of.items()}
    ordered = sorted(keys)
    _, held_idx = split_held_out([keys[p] for p in ordered], config.eval_fraction, config.seed)
    held_ids = [ordered[i] for i in held_idx]
    held_keys = {keys[p] for p in held_ids}

    # 3. Feedback: the reward model's scores (also the report's judge), human rankings, or
    #    simulated annotators ranking the queue through the app's submission path.
    scorer = load_scorer(spec) if spec else None
    score_fn = None
    if config.simulated:
        from data.simulate import load_score_fn

        score_fn = load_score_fn(config.simulated)
    if not state.done("feedback"):
        rankings = None
        if scorer is not None:
            _score_run(db, scorer, spec.name, run_id)
        if config.feedback == "human":
            wait_for_rankings(db, run_id, config.min_ranked or max(1, len(keys) - len(held_ids)),
                              config, say=say)
        elif score_fn is not None:
            from data.simulate import SimulationConfig, simulate_queue

            simulated = simulate_queue(db, score_fn, SimulationConfig(
                annotators=config.sim_annotators, overlap=config.sim_overlap,
                noise=config.sim_noise, seed=config.seed + iteration))
            say(f"rankloop: {simulated.line()}")
            rankings = simulated.submitted
        state.mark("feedback", rankings=rankings)

    # 4. Train from the current policy, then ask the recipe's diagnostics whether it moved.
    if not state.done("train"):
        from_scores = config.feedback == "reward-model"
        if scorer is not None:
            reward_fn = lambda prompts, texts: scorer.score(  # noqa: E731
                [list(p) + [{"role": "assistant", "content": t}] for p, t in zip(prompts, texts)])
        else:
            reward_fn = score_fn
        result = TRAINERS[config.algorithm](TrainContext(
            config=config, db=db, run_id=run_id, base_model=base_model, output=output,
            scorer_name=spec.name if from_scores else None, reward_fn=reward_fn,
            train_prompts=[m for pid, m in prompt_of.items() if keys[pid] not in held_keys],
            held_keys=held_keys, progress=progress, resume=state.resumed,
            verdict_only=_previous_candidates(db, run_id, previous)))
        state.mark("train", train={"trained_on": result.trained_on,
                                   "diagnosis": asdict(result.diagnosis),
                                   "settings": result.settings,
                                   "settings_note": result.settings_note})
        # The saved policy is what later steps need; optimizer state is several times its size.
        shutil.rmtree(output / "checkpoints", ignore_errors=True)
    trained = state.data["train"]

    # 5. Report on held-out prompts: the previous policy's first candidate of step 1 against
    #    one sample of the new policy, judged by the same reward model or scoring function.
    new_model = str(output.resolve())
    diagnosis = trained["diagnosis"]
    report = IterationReport(
        iteration, config.algorithm, config.feedback, base_model, new_model, run_id,
        trained["trained_on"], len(held_ids), None, None, None, None, None, None, 0.0,
        judge=spec.name if spec else (f"{SIMULATED_PREFIX}{config.simulated}"
                                      if config.simulated else None),
        diagnosis=diagnosis["summary"], diagnostics=diagnosis["values"],
        rankings=state.data.get("rankings"), settings=trained.get("settings") or {},
        settings_note=trained.get("settings_note") or "")
    if diagnosis["warning"]:
        report.warnings.append(diagnosis["warning"])
    if held_ids:
        old = {row["prompt_id"]: row for row in run_candidates if row["idx"] == 0}
        held_prompts = [prompt_of[p] for p in held_ids]
        tokenizer = load_tokenizer(resolve_model(base_model))
        texts = [format_chat(tokenizer, m) for m in held_prompts]
        new = _sample_new_policy(sampler.get(), new_model, texts, config)
        n = len(held_ids)
        old_texts = [old[p]["text"] for p in held_ids]
        new_texts = [s.text for s in new]
        old_scores = new_scores = None
        if scorer is not None:
            stored = store.model_scores(db, spec.name, [old[p]["id"] for p in held_ids])
            old_scores = [stored[old[p]["id"]].score for p in held_ids]
            new_scores = scorer.score([m + [{"role": "assistant", "content": t}]
                                       for m, t in zip(held_prompts, new_texts)])
        elif score_fn is not None:
            old_scores = score_fn(held_prompts, old_texts)
            new_scores = score_fn(held_prompts, new_texts)
        if old_scores is not None:
            report.reward_old = sum(old_scores) / n
            report.reward_new = sum(new_scores) / n
            report.win_rate = sum(1.0 if b > a else 0.5 if b == a else 0.0
                                  for a, b in zip(old_scores, new_scores)) / n
        report.kl = kl_new_old(new_model, resolve_model(base_model), texts, new_texts,
                               config.temperature)
        report.length_old = sum(old[p]["token_count"] for p in held_ids) / n
        report.length_new = sum(s.token_count for s in new) / n
        held = held_out_diagnosis(report.kl, learning_rate=report.settings.get(
            "learning_rate", 0.0))
        if held is not None and held.warning:
            report.warnings.append(held.warning)
    if previous is not None:
        _people_verdict(db, report, base_model, previous, config)
    state.mark("report")
    return report


def previous_mix(config: LoopConfig, db, base_model: str) -> tuple[str | None, int]:
    """(the policy before ``base_model``, how many of each prompt's k candidates it samples
    this round): (None, 0) on the first iteration, with reward-model feedback by default, or
    when k leaves too few candidates."""
    share = config.previous_share
    if share is None:
        share = 0.0 if config.feedback == "reward-model" else 0.5
    reports = store.iteration_reports(db)
    if not share or not reports or reports[-1].get("model") != base_model:
        return None, 0
    count = min(max(1, round(config.k * share)), config.k - 2)
    return (reports[-1]["base_model"], count) if count >= 1 else (None, 0)


def _previous_candidates(db, run_id: int, previous: str | None) -> set[int]:
    if previous is None:
        return set()
    from policy.generate import policy_name

    name = policy_name(previous)
    in_run = {row["id"] for row in store.candidates_for_run(db, run_id)}
    return {c for c, (policy, _) in store.candidate_policies(db).items()
            if policy == name and c in in_run}


def _people_verdict(db, report: IterationReport, base_model: str, previous: str,
                    config: LoopConfig) -> None:
    """Fills the report's people's verdict: this round's rankings of new against previous
    candidates, beside the judged iteration's own judge, and warns when they disagree."""
    from data.arena import votes_from_db, win_rate
    from policy.generate import policy_name

    verdict = win_rate(votes_from_db(db, run_id=report.run_id), policy_name(base_model),
                       policy_name(previous), seed=config.seed)
    if verdict is None:
        return
    judged = store.iteration_reports(db)[-1]
    report.human_win_rate, report.ci_low, report.ci_high = (verdict.win_rate, verdict.ci_low,
                                                            verdict.ci_high)
    report.human_votes, report.verdict_on = verdict.votes, judged["iteration"]
    report.judge_win_rate = judged.get("win_rate")
    if report.judge_win_rate is not None and report.judge_win_rate > 0.5 \
            and verdict.win_rate < 0.5:
        report.warnings.append(
            f"people and the judge disagree on iteration {judged['iteration']}'s policy: "
            f"{judged.get('judge') or 'its judge'} gave it a win rate of "
            f"{report.judge_win_rate:.3f} over the policy before it, people "
            f"{verdict.win_rate:.3f} [{verdict.ci_low:.3f}, {verdict.ci_high:.3f}] in "
            f"{verdict.votes} comparisons: the policy may be over-optimising its reward; "
            "lower the learning rate or train the reward model on the new rankings")


def _score_run(db, scorer, scorer_name: str, run_id: int) -> None:
    from data.queue_order import refresh_uncertainty

    todo = store.candidates_to_score(db, scorer_name, run_id=run_id)
    if todo:
        scores = scorer.score([c.messages + [{"role": "assistant", "content": c.text}]
                               for c in todo])
        store.put_model_scores(db, [store.ModelScore(c.candidate_id, scorer_name, s)
                                    for c, s in zip(todo, scores)])
    # The new items (made with their candidates) need their scores' uncertainty for the
    # uncertain queue order.
    refresh_uncertainty(db)


# --- the report across iterations -----------------------------------------------------------------

_COLUMNS = (("iteration", "iter"), ("algorithm", "algorithm"), ("train_pairs", "trained on"),
            ("reward_old", "reward old"), ("reward_new", "reward new"), ("win_rate", "win rate"),
            ("kl", "KL"), ("length_old", "length old"), ("length_new", "length new"),
            ("seconds", "seconds"))

# The people's verdict on the policy each iteration started from (``human_win_rate``).
_COLUMNS += (("human_win_rate", "people: new vs previous"), ("ci_low", "low"),
             ("ci_high", "high"))


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def report_markdown(reports: list[dict]) -> str:
    """A markdown table of the held-out metrics, one row per iteration, then each iteration's
    diagnosis and warnings."""
    lines = ["| " + " | ".join(title for _, title in _COLUMNS) + " |",
             "|" + "---|" * len(_COLUMNS)]
    for r in reports:
        lines.append("| " + " | ".join(_cell(r.get(key)) for key, _ in _COLUMNS) + " |")
    notes = []
    for r in reports:
        if r.get("settings_note"):
            shown = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in (r.get("settings") or {}).items())
            notes.append(f"- iteration {r['iteration']}: {r['settings_note']} ({shown})")
        if r.get("diagnosis"):
            notes.append(f"- iteration {r['iteration']}: {r['diagnosis']}")
        for warning in r.get("warnings") or []:
            notes.append(f"- iteration {r['iteration']}: **warning**: {warning}")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def report_svg(reports: list[dict], *, width: int = 640, panel_height: int = 150) -> str:
    """Held-out reward (old and new), win rate, KL and new length across iterations, one panel
    each, as a self-contained SVG (no plotting library needed)."""
    from html import escape

    panels = [("held-out reward", ("reward_old", "reward_new")), ("win rate", ("win_rate",)),
              ("KL(new ‖ old)", ("kl",)), ("length (tokens)", ("length_old", "length_new"))]
    colors = {"reward_old": "#999999", "length_old": "#999999"}
    if any(r.get("human_win_rate") is not None for r in reports):
        panels.insert(2, ("people's win rate, new over previous (95% interval)",
                          ("human_win_rate", "ci_low", "ci_high")))
        colors.update(ci_low="#bbbbbb", ci_high="#bbbbbb")
    left, right, top = 60, 20, 24
    height = len(panels) * (panel_height + top) + 30
    xs = [r["iteration"] for r in reports]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    for index, (title, keys) in enumerate(panels):
        y0 = index * (panel_height + top) + top
        values = [r.get(k) for r in reports for k in keys if r.get(k) is not None]
        parts.append(f'<text x="{left}" y="{y0 - 6}" font-weight="bold">{escape(title)}</text>')
        parts.append(f'<rect x="{left}" y="{y0}" width="{width - left - right}" '
                     f'height="{panel_height}" fill="none" stroke="#cccccc"/>')
        if not values or not xs:
            continue
        lo, hi = min(values), max(values)
        if hi == lo:
            lo, hi = lo - 0.5, hi + 0.5
        x_lo, x_hi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1

        def point(x, v):
            px = left + (x - x_lo) / (x_hi - x_lo) * (width - left - right)
            return px, y0 + panel_height - (v - lo) / (hi - lo) * panel_height

        parts.append(f'<text x="{left - 4}" y="{y0 + 10}" text-anchor="end">{hi:.3g}</text>')
        parts.append(f'<text x="{left - 4}" y="{y0 + panel_height}" text-anchor="end">'
                     f'{lo:.3g}</text>')
        for key in keys:
            pts = [point(r["iteration"], r[key]) for r in reports if r.get(key) is not None]
            color = colors.get(key, "#1f77b4")
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                         f'stroke-width="2"/>')
            parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>'
                         for x, y in pts)
    y_axis = height - 8
    for x in sorted(set(xs)):
        px = left + (x - min(xs)) / ((max(xs) - min(xs)) or 1) * (width - left - right)
        parts.append(f'<text x="{px:.1f}" y="{y_axis}" text-anchor="middle">iteration {x}'
                     f'</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_loop_report(output: Path, reports: list[dict]) -> None:
    """``loop_report.md``, ``loop_report.json`` and ``loop_report.svg`` in ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "loop_report.md").write_text(report_markdown(reports))
    (output / "loop_report.json").write_text(json.dumps(reports, indent=2) + "\n")
    (output / "loop_report.svg").write_text(report_svg(reports))
