"""What the Admin tab's controls do, as plain functions of the service and the admin's name.

Like ``labeler/handlers.py``: no Gradio here, every check and refusal is testable against a
real SQLite file, and each function first checks that the user is an admin.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from data import agreement, browser, labeling, store
from data.reliability import reliability
from labeler.handlers import GENERATE_KIND, BadRequest, LabelerService, _as_bool, _as_int
from labeler.auth import password_problem
from labeler.jobs import JobError, JobRunner, confine_output, workspace_dir

BACKENDS = ("auto", "vllm", "transformers")


def as_int(name: str, value) -> int | None:
    """A whole number from an event's raw value (None when empty); BadRequest otherwise."""
    return _as_int(name, value)


def _as_float(name: str, value) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise BadRequest(f"{name} must be a number")
    return float(value)


@dataclass(frozen=True)
class DatasetStatus:
    counts: dict[str, int]
    annotators: list[list]
    """Rows: annotator, role, ranked, skipped, all bad, demonstrations, gold accuracy,
    reliability weight, temperature, median active seconds, implausibly fast votes."""
    alpha: float | None
    agreement_pairs: list[list]
    """Rows: annotator, annotator, agreement, candidate pairs compared."""
    labels_over_time: list[tuple[float, int]]
    """(submission time, cumulative submissions)."""

    def summary_md(self) -> str:
        c = self.counts
        alpha = "n/a (needs overlap ≥ 2)" if self.alpha is None else f"{self.alpha:.3f}"
        return (
            f"**{c.get('prompts', 0)}** prompts · **{c.get('candidates', 0)}** candidates · "
            f"**{c.get('items', 0)}** items · **{c.get('rankings', 0)}** rankings · "
            f"**{c.get('comparisons', 0)}** pairwise comparisons\n\n"
            f"Krippendorff's alpha (ordinal, over items ranked by ≥ 2 annotators): **{alpha}**"
            + (f"\n\n**{c['set_aside']}** items set aside because the page cannot show them "
               "(their reason is in the items table)" if c.get("set_aside") else "")
        )


# Agreement and the annotator table read every vote (seconds at 100k items), and the console
# polls them: they are recomputed only when what they are made of has changed.
_STATUS_VERSION = (
    "SELECT (SELECT MAX(id) FROM rankings), (SELECT MAX(id) FROM items), "
    "(SELECT COUNT(*) FROM items WHERE set_aside_at IS NOT NULL), "
    "(SELECT group_concat(id || ':' || role, ',') FROM users), "
    "(SELECT MAX(id) FROM candidates), (SELECT COUNT(*) FROM prompts)")
_status_cache: dict[str, tuple[tuple, DatasetStatus]] = {}
_status_lock = threading.Lock()


def dataset_status(svc: LabelerService, username: str) -> DatasetStatus:
    svc.require_admin(username)
    db = svc.db()
    version = tuple(db.execute(_STATUS_VERSION).fetchone())
    with _status_lock:
        cached = _status_cache.get(svc.db_path)
    if cached and cached[0] == version:
        return cached[1]
    status = _compute_status(db)
    with _status_lock:
        _status_cache[svc.db_path] = (version, status)
    return status


def _compute_status(db) -> DatasetStatus:
    counts = store.counts(db)
    counts["items"] = db["items"].count
    counts["set_aside"] = len(labeling.set_aside_items(db))
    rows = labeling.rankings_for_agreement(db)
    regular = [r for r in rows if not r["is_gold"]]
    gold = agreement.gold_accuracy([r for r in rows if r["is_gold"]])
    speeds = agreement.speed(rows)
    fit = _reliability(db).annotators
    annotators = []
    for row in labeling.per_annotator_counts(db):
        accuracy = agreement.ratio(gold.get(row["annotator"], (0, 0)))
        annotators.append([row["annotator"], row["role"], row["ranked"] or 0,
                           row["skipped"] or 0, row["all_bad"] or 0, row["demonstrations"] or 0,
                           "" if accuracy is None else f"{accuracy:.0%}",
                           *_reliability_cells(fit.get(row["annotator"])),
                           *_speed_cells(speeds.get(row["annotator"]))])
    pairs = [[a, b, f"{agree / total:.0%}", total]
             for (a, b), (agree, total) in sorted(agreement.pairwise_agreement(regular).items())]
    times = browser.label_times(db)  # skips are not rankings
    return DatasetStatus(counts, annotators, agreement.krippendorff_alpha_ordinal(regular), pairs,
                         thin_cumulative(times))


# The reliability fit takes seconds at 100k votes: refitted when the ranked votes grew by more
# than REFIT_GROWTH since the last fit, or it is REFIT_AFTER_S old, not on every new vote.
REFIT_GROWTH = 0.02
REFIT_AFTER_S = 600.0
_reliability_cache: dict[str, tuple[int, float, object]] = {}


def _reliability(db):
    path = db.execute("PRAGMA database_list").fetchone()[2]
    votes = db.execute("SELECT COUNT(*) FROM rankings WHERE skipped = 0").fetchone()[0]
    with _status_lock:
        cached = _reliability_cache.get(path)
    if (cached and cached[0] <= votes <= cached[0] * (1 + REFIT_GROWTH)
            and time.time() - cached[1] < REFIT_AFTER_S):
        return cached[2]
    fit = reliability(db, keep_annotator_names=True)
    with _status_lock:
        _reliability_cache[path] = (votes, time.time(), fit)
    return fit


def _reliability_cells(who) -> list[str]:
    """Weight and temperature; an annotator with no vote checked by overlap or gold shows the
    weight they are given, marked as not checked."""
    if who is None:
        return ["", ""]
    if who.temperature is None:
        return [f"{who.weight:.2f} (not checked)", ""]
    return [f"{who.weight:.2f}", f"{who.temperature:.2f}"]


def _speed_cells(speed) -> list:
    if speed is None:
        return ["", 0]
    median, timed, fast = speed
    shown = "" if median is None else f"{median:.1f} s" if median < 10 else f"{median:.0f} s"
    return [shown, fast]


def alpha_md(alpha: float | None) -> str:
    """Krippendorff's alpha with what its value means for the labels."""
    if alpha is None:
        return ("Krippendorff's alpha (ordinal, over items ranked by ≥ 2 annotators): **n/a** "
                "— no item has two rankings yet; set the overlap to 2 or more in the Project "
                "tab.")
    reading = ("reliable agreement" if alpha >= 0.8 else
               "tentative: usable with care" if alpha >= 0.667 else
               "low: check the guidelines and the disputed items" if alpha > 0 else
               "no better than chance: annotators rank differently")
    return (f"Krippendorff's alpha (ordinal, over items ranked by ≥ 2 annotators): "
            f"**{alpha:.3f}** — {reading} (1 = full agreement, 0 = chance; 0.8 and above is "
            "the usual bar, 0.667 the lowest for tentative conclusions).")


READING_NOTE = (
    "How to read these: **gold accuracy** is the share of an annotator's gold items ranked "
    "in the known order (100% = every one; a careful annotator stays near it). **Agreement** "
    "is the share of candidate pairs two annotators ordered the same way on the items both "
    "ranked (50% is what chance gives). All times in the console are UTC.")


def labels_per_period(points: list[tuple[float, int]]) -> list[tuple[str, int]]:
    """Labels per UTC hour ("2026-12-05 06:00"), or per UTC day ("2026-12-05") when they span
    more than two days, from (time, labels so far) points; at most the last 72 periods."""
    from datetime import datetime, timezone

    if not points:
        return []
    times = [t for t, _ in points]
    daily = times[-1] - times[0] > 2 * 86400
    fmt = "%Y-%m-%d" if daily else "%Y-%m-%d %H:00"
    counts: dict[str, int] = {}
    previous = 0
    for t, so_far in points:  # thinned points: each carries the labels since the last one
        key = datetime.fromtimestamp(t, timezone.utc).strftime(fmt)
        counts[key] = counts.get(key, 0) + so_far - previous
        previous = so_far
    return sorted(counts.items())[-72:]


MAX_PLOT_POINTS = 500


def thin_cumulative(times: list[float], max_points: int = MAX_PLOT_POINTS
                    ) -> list[tuple[float, int]]:
    """(time, submissions so far) for sorted ``times``, at most ``max_points`` of them (always
    the first and the last): a plot of 100k submissions needs no 100k points."""
    n = len(times)
    if n <= max_points:
        return [(t, i + 1) for i, t in enumerate(times)]
    step = (n - 1) / (max_points - 1)
    picks = sorted({round(j * step) for j in range(max_points)})
    return [(times[i], i + 1) for i in picks]


def live_counts(svc: LabelerService, username: str) -> str:
    """The console's headline counts, cheap enough to poll every few seconds at 100k items."""
    svc.require_admin(username)
    db = svc.db()
    votes = browser.vote_counts(db)
    c = store.counts(db)
    return (f"**{c.get('prompts', 0)}** prompts · **{c.get('candidates', 0)}** candidates · "
            f"**{votes['items']}** items (**{votes['labeled_items']}** labeled) · "
            f"**{votes['labels']}** rankings · **{votes['skips']}** skips · "
            f"**{votes['comparisons']}** pairwise comparisons")


def check_model(svc: LabelerService, model: str | None) -> str:
    """``model`` as the job should be given it: ``default``, an absolute model folder, or a
    Hub id that is cached here (or, with the Hub reachable, exists there). Raises JobError
    with the reason otherwise, so a job for a mistyped model never starts."""
    from training.models import ModelNotFoundError, is_default, resolve_model

    if model is None or (isinstance(model, str) and is_default(model.strip())):
        return "default"
    if not isinstance(model, str):
        raise JobError("the model is default, a model folder or a Hub id")
    model = model.strip()
    local = _local_model_path(svc, model)
    if local is not None:
        try:
            return resolve_model(str(local))
        except ModelNotFoundError as exc:
            raise JobError(str(exc)) from None
    if _looks_like_path(model):
        raise JobError(f"model folder {model} does not exist")
    try:
        resolve_model(model)
    except ModelNotFoundError as exc:
        raise JobError(str(exc)) from None
    if not _known_hub_model(model):
        raise JobError(f"model {model!r} is neither a folder here nor a model cached from (or "
                       "found on) the Hugging Face Hub")
    return model


def _local_model_path(svc: LabelerService, model: str) -> Path | None:
    """The existing folder ``model`` names: as given (from the app's folder), else inside the
    workspace where the app's jobs save models."""
    raw = Path(model).expanduser()
    candidates = [raw] if raw.is_absolute() else [raw, workspace_dir(svc.db_path) / raw]
    return next((c for c in candidates if c.exists()), None)


def _looks_like_path(model: str) -> bool:
    return (model.startswith(("/", "./", "../", "~")) or model.count("/") > 1
            or "\\" in model or model.endswith("/"))


def _known_hub_model(repo_id: str) -> bool:
    """Cached here, or (only when the Hub may be reached) present on the Hub."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return True
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        HfApi().model_info(repo_id, timeout=5)
    except RepositoryNotFoundError:
        return False
    except Exception:  # noqa: BLE001 - unreachable Hub: the job could not download it either
        return False
    return True


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
"""A Hugging Face Hub repository id: ``name`` or ``owner/name``."""


def check_prompts(svc: LabelerService, prompts: str | None) -> str:
    """``prompts`` as the job should be given it: ``bundled``, an existing prompt file
    (``.jsonl``/``.json``/``.csv``/``.parquet``) or ``save_to_disk`` folder as an absolute path,
    or a Hub dataset id that is cached here (or, with the Hub reachable, exists there). Raises
    JobError with the reason otherwise, so a job that would only fail later never starts
    (and nothing that reads as a flag, such as ``-h``, reaches its command line)."""
    from data.prompts import BUNDLED, FILE_SUFFIXES

    if prompts is None or (isinstance(prompts, str) and prompts.strip() in ("", BUNDLED)):
        return BUNDLED
    if not isinstance(prompts, str):
        raise JobError("the prompts are bundled, a prompt file, a saved dataset folder or a "
                       "Hub dataset id")
    source = prompts.strip()
    if not source.isprintable():
        raise JobError("the prompts field holds a control or invisible character")
    local = _local_model_path(svc, source)
    if local is not None:
        if local.is_file():
            if local.suffix.lower() not in FILE_SUFFIXES:
                raise JobError(f"prompt file {source} is not one of "
                               f"{', '.join(FILE_SUFFIXES)}")
        elif not any((local / name).is_file() for name in _SAVED_DATASET_FILES):
            raise JobError(f"folder {source} is not a dataset saved with save_to_disk")
        return str(local.resolve())
    if _looks_like_path(source) or Path(source).suffix.lower() in FILE_SUFFIXES:
        raise JobError(f"prompt file {source} does not exist")
    if not _HUB_ID.fullmatch(source) or ".." in source:
        raise JobError(f"{source!r} is neither bundled, a prompt file or folder here, nor a "
                       "Hugging Face Hub dataset id (owner/name)")
    if not _known_hub_dataset(source):
        raise JobError(f"dataset {source!r} is neither a file or folder here nor a dataset "
                       "cached from (or found on) the Hugging Face Hub")
    return source


_SAVED_DATASET_FILES = ("dataset_info.json", "dataset_dict.json", "state.json")


def _known_hub_dataset(repo_id: str) -> bool:
    """Cached here (by huggingface_hub or by datasets), or present on the Hub when the Hub
    may be reached."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    hub_cache = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id,
                                                                 repo_type="dataset")
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE") or
                          Path(constants.HF_HOME) / "datasets") / repo_id.replace("/", "___")
    if hub_cache.is_dir() or datasets_cache.is_dir():
        return True
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_DATASETS_OFFLINE", "").lower() in (
            "1", "true", "yes", "on"):
        return False
    from huggingface_hub import HfApi

    try:
        HfApi().dataset_info(repo_id, timeout=5)
    except Exception:  # noqa: BLE001 - unknown, gated or unreachable: the job would fail too
        return False
    return True


def start_generation(svc: LabelerService, username: str, *, prompts: str = "bundled",
                     k: int = 4, limit: int | None = None, backend: str = "auto",
                     model: str = "default", max_new_tokens: int = 256,
                     tensor_parallel_size: int = 1, data_parallel_size: int = 1,
                     temperature: float = 0.8, top_p: float = 0.9, seed: int = 0) -> str:
    user = svc.require_admin(username)
    k = _as_int("k", k)
    if k is None or not 1 <= k <= labeling.MAX_CANDIDATES:
        return (f"Not started: k is the number of candidates per prompt, 1 to "
                f"{labeling.MAX_CANDIDATES} (the page shows at most that many).")
    max_new_tokens = _as_int("max new tokens", max_new_tokens)
    if max_new_tokens is None or max_new_tokens < 1:
        return "Not started: max new tokens must be at least 1."
    seed = _as_int("the seed", seed) or 0
    temperature, top_p = _as_float("temperature", temperature), _as_float("top p", top_p)
    if temperature is None or temperature < 0:
        return "Not started: the temperature must be 0 (greedy) or more."
    if top_p is None or not 0 < top_p <= 1:
        return "Not started: top p must be above 0 and at most 1."
    if backend not in BACKENDS:
        return f"Not started: the backend is one of {', '.join(BACKENDS)}."
    if model in (None, "", "default"):
        # The loop records each new policy: the app's next candidates come from the newest.
        model = store.current_policy(svc.db()) or "default"
    try:
        prompts = check_prompts(svc, prompts)
        model = check_model(svc, model)
    except JobError as exc:
        return f"Not started: {exc}."
    args = ["generate", "--prompts", prompts, "--k", str(int(k)),
            "--backend", backend, "--model", model,
            "--max-new-tokens", str(max_new_tokens), "--temperature", f"{temperature:g}",
            "--top-p", f"{top_p:g}", "--seed", str(seed), "--no-progress"]
    limit = _as_int("the limit", limit)
    if limit:
        args += ["--limit", str(limit)]
    for flag, name, size in (("--tensor-parallel-size", "tensor parallel", tensor_parallel_size),
                             ("--data-parallel-size", "data parallel", data_parallel_size)):
        size = _as_int(name, size)
        if size and size > 1:
            args += [flag, str(size)]
    return _start(svc, GENERATE_KIND, args, user)


def _start(svc: LabelerService, kind: str, args: list[str], user: labeling.User) -> str:
    try:
        job = svc.jobs.start(kind, args, started_by=user.name)
    except JobError as exc:
        return f"Not started: {exc}."
    return f"Started job {job.id}: rankloop {' '.join(job.argv)}"


def start_reward_training(svc: LabelerService, username: str, *, output: str,
                          model: str = "default", epochs: int = 1, agreed_only: bool = False,
                          lora_r: int = 0) -> str:
    """`rankloop train reward` on the app's ranked pairs, as a background job."""
    user = svc.require_admin(username)
    if not isinstance(output, str) or not output.strip():
        return "Not started: give an output folder for the reward model."
    try:
        folder = confine_output(svc.db_path, output)
    except JobError as exc:
        return f"Not started: {exc}."
    epochs, lora_r = _as_int("epochs", epochs), _as_int("the LoRA rank", lora_r)
    try:
        model = check_model(svc, model)
    except JobError as exc:
        return f"Not started: {exc}."
    args = ["train", "reward", "--output", str(folder), "--model", model,
            "--epochs", str(max(1, epochs or 1)), "--no-progress"]
    if _as_bool("agreed only", agreed_only):
        args.append("--agreed-only")
    if lora_r:
        args += ["--lora-r", str(lora_r)]
    return _start(svc, "train-reward", args, user)


SCORER_KINDS = ("bt", "armorm")


def start_scoring(svc: LabelerService, username: str, *, scorer: str) -> str:
    """`rankloop score` of every candidate with a reward model, as a background job."""
    user = svc.require_admin(username)
    kind, _, folder = scorer.strip().partition(":") if isinstance(scorer, str) else ("", "", "")
    if kind not in SCORER_KINDS or not folder:
        return "Not started: the scorer is bt:FOLDER or armorm:FOLDER."
    local = _local_model_path(svc, folder)
    if local is None or not (local / "config.json").is_file():
        return (f"Not started: the reward model folder {folder} does not exist here or has "
                "no config.json (train one first, or give the folder of a saved one).")
    return _start(svc, "score", ["score", "--scorer", f"{kind}:{local.resolve()}"], user)


JOB_HEADERS = ["id", "kind", "status", "progress", "exit", "by", "started (UTC)", "ran for",
               "command"]
STATUS_WORDS = {"stopped": "stopped by an admin", "interrupted": "interrupted (app stopped)",
                "lost": "lost (its process is gone)"}


def _flag(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def job_progress(svc: LabelerService, job) -> str:
    """How far a running job is, in plain words, from what the job itself records: a
    generation's stored prompts (``data.progress.generation_progress``), a training's
    ``metrics.jsonl`` (``data.progress.training_progress``). Empty for other jobs."""
    from data import progress

    if job.kind == GENERATE_KIND:
        p = progress.generation_progress(svc.db(), job.id)
        return p.line() if p else ""
    if job.kind == "train-reward":
        output = _flag(job.argv, "--output")
        if not output:
            return ""
        try:
            epochs = float(_flag(job.argv, "--epochs") or 1)
        except ValueError:
            epochs = 1.0
        return progress.training_progress(Path(output) / "metrics.jsonl", epochs=epochs,
                                          started_at=job.started_at).line()
    return ""


def jobs_table(svc: LabelerService, username: str) -> list[list]:
    svc.require_admin(username)
    now = time.time()
    return [[j.id, j.kind, STATUS_WORDS.get(j.status, j.status),
             job_progress(svc, j) if j.status == "running" else "",
             "" if j.returncode is None else j.returncode, j.started_by, _utc(j.started_at),
             _elapsed((j.finished_at or now) - j.started_at), " ".join(j.argv)]
            for j in svc.jobs.list()]


def _elapsed(seconds: float) -> str:
    from data.progress import duration

    return duration(max(0.0, seconds))


def running_jobs_md(svc: LabelerService, username: str) -> str:
    """The overview's line on the jobs running now, each named with its progress."""
    svc.require_admin(username)
    running = svc.jobs.running()
    if not running:
        return "No job is running."
    now = time.time()
    return "Running now: " + "; ".join(
        f"job {j.id} ({j.kind}, started by {j.started_by} {_elapsed(now - j.started_at)} ago)"
        + (f": {p}" if (p := job_progress(svc, j)) else "") for j in running)


def machine_has_gpu() -> bool:
    """Whether this machine has an NVIDIA GPU a job could use (asked once per process)."""
    global _HAS_GPU
    if _HAS_GPU is None:
        import shutil

        _HAS_GPU = detect_gpu(Path("/proc/driver/nvidia/gpus"), shutil.which("nvidia-smi"))
    return _HAS_GPU


def detect_gpu(proc_gpus: Path, nvidia_smi: str | None) -> bool:
    """Without importing torch (the app never does): the driver lists each GPU under
    ``/proc/driver/nvidia/gpus``; else ``nvidia-smi -L`` prints one ``GPU n: …`` line per
    GPU (inside containers the /proc entries may be missing)."""
    import subprocess

    if proc_gpus.is_dir() and any(proc_gpus.iterdir()):
        return True
    if not nvidia_smi:
        return False
    try:
        out = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(line.startswith("GPU ") for line in out.splitlines())


_HAS_GPU: bool | None = None


def _count_prompts(svc: LabelerService, prompts) -> int | None:
    """How many prompts a source holds, when that is cheap to know (bundled, a JSONL file)."""
    from data.prompts import BUNDLED, BUNDLED_FILE

    source = (prompts or "").strip() if isinstance(prompts, str) else None
    path = BUNDLED_FILE if source in ("", BUNDLED) else None
    if path is None and source:
        local = _local_model_path(svc, source)
        if local is not None and local.is_file() and local.suffix.lower() == ".jsonl":
            path = local
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


MIN_TIMED_S = 10.0
"""A run timed over less than this tells nothing of the machine's speed."""


def _tokens_per_second(db) -> float | None:
    """New tokens per second of the latest generation run that stored two prompts or more."""
    row = db.execute(
        "SELECT SUM(token_count), MAX(created_at) - MIN(created_at), COUNT(DISTINCT prompt_id) "
        "FROM candidates WHERE run_id = (SELECT run_id FROM candidates c JOIN generation_runs g "
        "ON g.id = c.run_id WHERE g.backend NOT IN ('human', 'gold') GROUP BY run_id "
        "HAVING COUNT(DISTINCT prompt_id) >= 2 ORDER BY MAX(c.id) DESC LIMIT 1)").fetchone()
    tokens, seconds, prompts = row if row else (None, None, None)
    if not tokens or not seconds or seconds < MIN_TIMED_S or not prompts:
        return None  # stored in one go (imported, or a run of seconds): not a speed
    # The first prompt's candidates were stored at the start of the span: its tokens do not
    # count in the rate.
    return tokens * (prompts - 1) / prompts / seconds


def generation_estimate(svc: LabelerService, username: str, *, prompts="bundled", k=4,
                        limit=0, max_new_tokens=256) -> str:
    """The work a generation job would start, said before it starts: prompts × candidates ×
    the token limit, and the time at the speed of the last run on this machine."""
    from data.progress import duration

    svc.require_admin(username)
    try:
        k, limit = _as_int("k", k) or 0, _as_int("the limit", limit) or 0
        tokens = _as_int("max new tokens", max_new_tokens) or 0
    except BadRequest:
        return "Fill in k, the limit and max new tokens to see the work this job starts."
    n = _count_prompts(svc, prompts)
    if n is not None and limit:
        n = min(n, limit)
    elif n is None and limit:
        n = limit
    if n is None:
        return (f"Each prompt of the dataset gets {k} candidates of up to {tokens:,} new "
                "tokens; set a limit to bound the work.")
    work = n * k * tokens
    text = (f"This job generates {n:,} prompts × {k} candidates × up to {tokens:,} new tokens "
            f"= up to {work:,} tokens")
    rate = _tokens_per_second(svc.db())
    if rate:
        text += (f"; at the last run's speed ({rate:,.0f} tokens/s) that is up to "
                 f"{duration(work / rate)}")
    else:
        text += " (no earlier run on this machine to time it by)"
    return text + "."


def stop_job(svc: LabelerService, username: str, job_id: int | None = None) -> str:
    """Stops a running job (0 or None: the latest running one)."""
    svc.require_admin(username)
    job_id = _as_int("the job id", job_id)
    if not job_id:
        running = svc.jobs.running()
        if not running:
            return "Nothing to stop: no job is running."
        job_id = running[0].id
    try:
        job = svc.jobs.stop(job_id)
    except JobError as exc:
        return f"Not stopped: {exc}."
    return f"Stopped job {job.id} ({job.kind}); its status is {job.status}."


def job_log(svc: LabelerService, username: str, job_id: int | None = None) -> str:
    svc.require_admin(username)
    job_id = _as_int("the job id", job_id)
    jobs = svc.jobs.list(limit=1) if not job_id else [svc.jobs.get(int(job_id))]
    jobs = [j for j in jobs if j is not None]
    if not jobs:
        return "No jobs yet."
    job = jobs[0]
    return f"job {job.id} ({job.kind}, {job.status})\n" + JobRunner.log_tail(job)


# --- export -----------------------------------------------------------------------------------

HUB_PREFIX = "hub:"


def export_dataset(svc: LabelerService, username: str, *, to: str, format: str = "conversational",
                   pairs: str = "all", ties: str = "exclude", min_agreement: float | None = None,
                   keep_annotator_names: bool = False, test_fraction: float = 0.1,
                   seed: int = 0, overwrite: bool = False, private: bool = False) -> str:
    """What `rankloop export` does, from the console. A folder (inside the workspace next to
    the database) is written here and now; ``hub:OWNER/NAME`` and the standard format (which
    loads a tokenizer) run `rankloop export` as a background job."""
    from data import export

    user = svc.require_admin(username)
    if not isinstance(to, str) or not to.strip():
        return ("Not exported: give a folder inside the workspace, or hub:OWNER/NAME for the "
                "Hugging Face Hub.")
    to = to.strip()
    seed = _as_int("the seed", seed) or 0
    if isinstance(min_agreement, str):  # the console's text field: empty keeps every pair
        try:
            min_agreement = float(min_agreement) if min_agreement.strip() else None
        except ValueError:
            return f"Not exported: the minimum agreement is a number from 0 to 1, not " \
                   f"{min_agreement!r}."
    min_agreement = _as_float("the minimum agreement", min_agreement)
    test_fraction = _as_float("the test fraction", test_fraction)
    try:
        config = export.ExportConfig(
            format=format, pairs=pairs, ties=ties, min_agreement=min_agreement,
            keep_annotator_names=_as_bool("keep annotator names", keep_annotator_names),
            test_fraction=0.1 if test_fraction is None else test_fraction, seed=seed)
        if to.startswith(HUB_PREFIX):
            repo_id = export.check_repo_id(to[len(HUB_PREFIX):].strip())
            export.hub_token()  # refused here, not in a job log, when there is none
            target = None
        else:
            target = confine_output(svc.db_path, to)
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            export.check_target(target, _as_bool("overwrite", overwrite))
    except (export.ExportError, JobError) as exc:
        return f"Not exported: {exc}."
    if target is None or config.format == "standard":
        args = ["export", "--to", f"{HUB_PREFIX}{repo_id}" if target is None else str(target),
                "--format", config.format, "--pairs", config.pairs, "--ties", config.ties,
                "--test-fraction", f"{config.test_fraction:g}", "--seed", str(config.seed)]
        if config.min_agreement is not None:
            args += ["--min-agreement", f"{config.min_agreement:g}"]
        if config.keep_annotator_names:
            args.append("--keep-annotator-names")
        if target is None and _as_bool("private", private):
            args.append("--private")
        if target is not None and overwrite:
            args.append("--overwrite")
        return _start(svc, "export", args, user).replace("Not started", "Not exported")
    try:
        built = export.build_export(svc.db(), config, db_label=f"database {svc.db_path}")
        written = export.write_local(built, target, overwrite=bool(overwrite))
    except export.ExportError as exc:
        return f"Not exported: {exc}."
    return f"Exported to {written}: {built.line()}"


def export_download(svc: LabelerService, username: str, message: str) -> str | None:
    """The folder a console export just wrote, as one zip file to download (in a fresh
    temporary folder, which the app may serve); None when nothing was written here."""
    import shutil
    import tempfile

    svc.require_admin(username)
    match = re.match(r"Exported to (.+?): ", message or "")
    if not match:
        return None
    folder = Path(match.group(1))
    workspace = workspace_dir(svc.db_path)
    if not folder.is_dir() or workspace not in folder.resolve().parents:
        return None
    target = Path(tempfile.mkdtemp(prefix="rankloop-export-")) / folder.name
    return shutil.make_archive(str(target), "zip", root_dir=folder)


CONSOLE_WORDS = (
    ("choose a new folder or pass --overwrite",
     'choose a new folder or tick "Replace a non-empty folder"'),
    ("set HF_TOKEN or run `hf auth login`",
     "log in to the Hugging Face Hub on the server (hf auth login there, or HF_TOKEN in the "
     "app's environment)"),
)
"""Command-line advice that the library's messages give, in the console's own words."""

REFUSALS = ("Not ", "Nothing to", "Password not", "Role not", "Fill in")


def console_message(message: str) -> str:
    for cli, console in CONSOLE_WORDS:
        message = message.replace(cli, console)
    return message


def is_refusal(message: str) -> bool:
    """Whether a console message says that nothing was done (shown as an error)."""
    return isinstance(message, str) and message.startswith(REFUSALS)


# --- users ------------------------------------------------------------------------------------

def users_table(svc: LabelerService, username: str) -> list[list]:
    svc.require_admin(username)
    return [[u.name, u.role, "disabled" if u.disabled else "active"]
            for u in labeling.list_users(svc.db())]


def create_user(svc: LabelerService, username: str, *, name: str, password: str,
                role: str = "annotator") -> str:
    from labeler.auth import hash_password

    svc.require_admin(username)
    if role not in labeling.ROLES:
        return f"Not created: the role is one of {', '.join(labeling.ROLES)}."
    try:
        clean = labeling.normalize_name(name)
    except labeling.LabelingError as exc:
        return f"Not created: {exc}."
    problem = password_problem(password, clean)
    if problem:
        return f"Not created: {problem}."
    try:
        user = labeling.add_user(svc.db(), clean, role, hash_password(password))
    except labeling.LabelingError as exc:
        return f"Not created: {exc}."
    return f"Created {user.role} {user.name!r}; they can log in now."


def _last_admin_refusal(svc: LabelerService, target: labeling.User) -> str | None:
    """Why taking ``target``'s admin rights (disabling or demoting) would leave nobody able to
    run the console, or None."""
    admins = [u for u in labeling.list_users(svc.db()) if u.is_admin and not u.disabled]
    if target.is_admin and not target.disabled and [u.id for u in admins] == [target.id]:
        # Only an admin acts here, so the last active admin is always the one acting.
        return "you are the last active admin; make another user an admin first"
    return None


def _target(svc: LabelerService, name) -> labeling.User:
    user = labeling.get_user(svc.db(), name) if isinstance(name, str) else None
    if user is None:
        raise labeling.LabelingError(f"no user {name!r}" if isinstance(name, str) and name.strip()
                                     else "choose a user")
    return user


def set_user_disabled(svc: LabelerService, username: str, *, name: str, disabled: bool) -> str:
    svc.require_admin(username)
    verb = "disabled" if disabled else "enabled"
    try:
        target = _target(svc, name)
        if disabled:
            refusal = _last_admin_refusal(svc, target)
            if refusal:
                return f"Not {verb}: {refusal}."
        user = labeling.set_disabled(svc.db(), target.name, bool(disabled))
    except labeling.LabelingError as exc:
        return f"Not {verb}: {exc}."
    if not disabled:
        return f"Enabled {user.name!r}; they can log in again."
    # Items they held go back to the queue now, not when their hold times out.
    released = browser.release_holds(svc.db(), user_id=user.id)
    return (f"Disabled {user.name!r}; their sessions have ended"
            + (f" and the {released} item{'s' if released != 1 else ''} they held "
               f"{'are' if released != 1 else 'is'} back in the queue." if released else "."))


def release_item(svc: LabelerService, username: str, item_id) -> str:
    """Returns an item that annotators hold to the queue now (their drafts stay)."""
    svc.require_admin(username)
    item_id = _as_int("the item id", item_id)
    if not item_id:
        return "Not released: give an item id."
    held = browser.item_detail(svc.db(), item_id)
    if held is None:
        return f"Not released: there is no item {item_id}."
    if not held.holders:
        return f"Not released: nobody holds item {item_id}."
    browser.release_holds(svc.db(), item_id=item_id)
    return f"Released item {item_id} (held by {', '.join(held.holders)}); it is back in the queue."


def reset_password(svc: LabelerService, username: str, *, name: str, password: str) -> str:
    from labeler.auth import hash_password

    svc.require_admin(username)
    try:
        target = _target(svc, name)
    except labeling.LabelingError as exc:
        return f"Password not changed: {exc}."
    problem = password_problem(password, target.name)
    if problem:
        return f"Password not changed: {problem}."
    user = labeling.set_password_hash(svc.db(), target.name, hash_password(password))
    return f"New password for {user.name!r}; their sessions have ended."


def set_user_role(svc: LabelerService, username: str, *, name: str, role: str) -> str:
    svc.require_admin(username)
    if role not in labeling.ROLES:
        return f"Role not changed: the role is one of {', '.join(labeling.ROLES)}."
    try:
        target = _target(svc, name)
        if role != "admin":
            refusal = _last_admin_refusal(svc, target)
            if refusal:
                return f"Role not changed: {refusal}."
        user = labeling.set_role(svc.db(), target.name, role)
    except labeling.LabelingError as exc:
        return f"Role not changed: {exc}."
    return f"{user.name!r} is now an {user.role}."


# --- project settings and the queue order -------------------------------------------------------

def project_settings(svc: LabelerService, username: str):
    from data import settings

    svc.require_admin(username)
    return settings.project_settings(svc.db())


def preview_guidelines(svc: LabelerService, username: str, *, text: str) -> str:
    """The guidelines as annotators will see them (rendered by labeler/render.py)."""
    from labeler.render import render_untrusted_markdown

    svc.require_admin(username)
    return render_untrusted_markdown(text if isinstance(text, str) else "")


def save_guidelines(svc: LabelerService, username: str, *, text: str) -> str:
    from data import settings

    user = svc.require_admin(username)
    try:
        stored = settings.set_setting(svc.db(), "guidelines", text if text is not None else "",
                                      by=user.name)
    except settings.SettingsError as exc:
        return f"Not saved: {exc}."
    return (f"Guidelines saved ({len(stored):,} characters); annotators see them on their next "
            "task." if stored else "Guidelines cleared.")


def save_suggestions(svc: LabelerService, username: str, *, enabled: bool,
                     scorer: str | None = None) -> str:
    from data import settings

    user = svc.require_admin(username)
    enabled = _as_bool("suggestions", enabled)
    if scorer is not None and not isinstance(scorer, str):
        return "Not saved: the scorer is text such as bt:models/reward-1."
    db = svc.db()
    try:
        scorer = settings.set_setting(db, "suggestion_scorer", (scorer or "").strip() or None,
                                      by=user.name)
        settings.set_setting(db, "suggestions", enabled, by=user.name)
    except settings.SettingsError as exc:
        return f"Not saved: {exc}."
    if not enabled:
        return "Suggestions are off."
    return ("Suggestions are on, from " + (f"the scorer {scorer}." if scorer else
                                          "each item's most recent scorer."))


def set_overlap(svc: LabelerService, username: str, *, overlap) -> str:
    """How many annotators rank each item: a project setting (kept across restarts, where it
    wins over ``rankloop app --overlap``) that applies to the next items handed out."""
    from dataclasses import replace

    from data import settings

    user = svc.require_admin(username)
    overlap = _as_int("the overlap", overlap)
    try:
        stored = settings.set_setting(svc.db(), "overlap", overlap, by=user.name)
    except settings.SettingsError as exc:
        return f"Not changed: {exc}."
    svc.policy = replace(svc.policy, overlap=stored)
    return (f"Each item is now ranked by {stored} annotator{'s' if stored != 1 else ''}"
            + ("; agreement needs 2 or more." if stored < 2 else
               "; agreement and alpha use the items ranked by 2 or more."))


def queue_order(svc: LabelerService, username: str) -> str:
    from data.queue_order import get_queue_order

    svc.require_admin(username)
    order = get_queue_order(svc.db())
    if order.order == "uncertain":
        return f"uncertain (scorers: {', '.join(order.scorers)})"
    return f"random (seed {order.seed})" if order.order == "random" else order.order


def set_queue_order(svc: LabelerService, username: str, *, order: str, scorers: str = "",
                    seed: int = 0) -> str:
    from data import queue_order as qo

    user = svc.require_admin(username)
    if not isinstance(order, str) or not isinstance(scorers or "", str):
        return "Not changed: the order is a name from the list and the scorers are text."
    names = tuple(s.strip() for s in (scorers or "").replace("\n", ",").split(",") if s.strip())
    bad = [s for s in names if ":" not in s]
    if order == "uncertain" and not names:
        return ("Not changed: the uncertain order needs at least one reward model (bt:FOLDER), "
                "whose stored scores of the candidates it reads.")
    if bad:
        return f"Not changed: a scorer is bt:FOLDER or armorm:FOLDER, not {bad[0]!r}."
    try:
        chosen = qo.QueueOrder(order, names if order == "uncertain" else (),
                               _as_int("the seed", seed) or 0)
    except ValueError as exc:
        return f"Not changed: {exc}."
    scored = qo.set_queue_order(svc.db(), chosen, set_by=user.name)
    current = queue_order(svc, username)
    if chosen.order == "uncertain":
        return f"The queue order is now {current}; {scored} items have an uncertainty."
    return f"The queue order is now {current}."


# --- the data browser ---------------------------------------------------------------------------

BROWSE_HEADERS = ["item", "status", "labels", "skips", "held by", "disagreement",
                  "annotators", "tags", "run", "gold", "prompt"]
ANY = "any"


@dataclass(frozen=True)
class BrowseView:
    rows: list[list]
    """One row per item, columns ``BROWSE_HEADERS``; every text cell is plain text."""
    page: int
    """0-based, clamped to the last page."""
    pages: int
    total: int

    def caption(self) -> str:
        return f"Page {self.page + 1} of {self.pages} · {self.total:,} items match"


def _or_none(value):
    return None if value in (None, "", ANY) else value


def _item_status(row: browser.ItemRow, overlap: int) -> str:
    if row.disagreement:
        return "disagreement"
    if row.labels >= overlap:
        return "overlap reached"
    if row.labels:
        return "done"
    return "in progress" if row.holders else "unassigned"


def browse(svc: LabelerService, username: str, *, status: str | None = None,
           annotator: str | None = None, run_id=None, tag: str | None = None,
           order: str = "id", page: int = 0, page_size: int = 50) -> BrowseView:
    """One page of items for the console's table (the queries of ``data.browser``)."""
    svc.require_admin(username)
    for name, value in (("the status", status), ("the annotator", annotator),
                        ("the tag", tag), ("the order", order)):
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"{name} is a name from the list")
    status = _or_none(status)
    if isinstance(status, str):
        status = status.replace(" ", "_")
    run_id = _or_none(run_id)
    if isinstance(run_id, str):  # the run filter's dropdown sends its choice as text
        if not run_id.strip().isdecimal():
            raise BadRequest("the run is a run id")
        run_id = int(run_id)
    run_id = _as_int("the run", run_id)
    page, page_size = _as_int("the page", page) or 0, _as_int("the page size", page_size) or 50
    overlap = svc.policy.overlap
    try:
        item_filter = browser.ItemFilter(status=status, annotator=_or_none(annotator),
                                         run_id=run_id, tag=_or_none(tag), overlap=overlap,
                                         order=order or "id")
        result = browser.browse_items(svc.db(), item_filter, page=max(0, page),
                                      page_size=page_size)
        if result.page >= result.pages and result.total:  # past the end: show the last page
            result = browser.browse_items(svc.db(), item_filter, page=result.pages - 1,
                                          page_size=page_size)
    except labeling.LabelingError as exc:
        raise BadRequest(str(exc)) from None
    rows = [[r.item_id, _item_status(r, overlap), r.labels, r.skips, ", ".join(r.holder_names),
             "" if r.disagreement is None else f"{r.disagreement:.2f}",
             ", ".join(r.annotators), ", ".join(r.tags), r.run_id, "gold" if r.is_gold else "",
             r.prompt_preview] for r in result.rows]
    return BrowseView(rows, result.page, result.pages, result.total)


def browse_choices(svc: LabelerService, username: str) -> dict[str, list]:
    """Choices of the browser's filters: annotators, runs and tags in use."""
    svc.require_admin(username)
    db = svc.db()
    return {
        "annotators": [u.name for u in labeling.list_users(db)],
        "runs": [(f"run {rid} · {model} · {n} items", str(rid))
                 for rid, model, n in browser.run_counts(db)],
        "tags": [tag for tag, _ in browser.tag_counts(db)],
    }


DISPUTED_STYLE = "background-color: #fde68a; color: #78350f; font-weight: 600"


@dataclass(frozen=True)
class ItemView:
    summary: str
    """Plain text."""
    prompt_html: str
    """Rendered by labeler/render.py."""
    candidate_headers: list[str]
    candidate_rows: list[list]
    """Per candidate: letter, disputed, one rank per annotator, mean, spread, one
    "score (rank)" per reward model, finish, text; plain text."""
    candidate_styling: list[list[str]]
    """Cell styles: the disputed candidates' rows are highlighted."""
    ranking_headers: list[str]
    ranking_rows: list[list]
    disputed: list[str]
    """Disputed candidate pairs, as letters ("A–C")."""


def item_view(svc: LabelerService, username: str, item_id) -> ItemView | None:
    from data.rankings import candidate_letter
    from labeler.render import conversation_html

    svc.require_admin(username)
    item_id = _as_int("the item id", item_id)
    detail = browser.item_detail(svc.db(), item_id) if item_id else None
    if detail is None:
        return None
    letter = {c.id: candidate_letter(c.idx) for c in detail.candidates}
    annotators = sorted({a for c in detail.candidates for a in c.human_ranks})
    disputed_ids = {cid for pair in detail.disputed_pairs for cid in pair}
    headers = (["candidate", "disputed"] + [f"rank by {a}" for a in annotators]
               + ["mean rank", "spread"]
               + [f"{browser.scorer_name(s)} score (rank)" for s in detail.scorers]
               + (["gold rank"] if detail.gold_ranks else []) + ["finish", "duplicate", "text"])
    rows, styling = [], []
    for c in detail.candidates:
        row = [letter[c.id], "disputed" if c.id in disputed_ids else ""]
        row += [c.human_ranks.get(a, "") for a in annotators]
        row += ["" if c.mean_rank is None else f"{c.mean_rank:.2f}",
                "" if c.rank_spread is None else c.rank_spread]
        row += [f"{c.model_scores[s]:.3f} ({c.model_ranks[s]})" if s in c.model_scores else ""
                for s in detail.scorers]
        if detail.gold_ranks:
            row.append(detail.gold_ranks.get(c.id, ""))
        row += [c.finish_reason or "",
                f"duplicate of {letter.get(c.duplicate_of, c.duplicate_of)}"
                if c.duplicate_of is not None else "", c.text]
        rows.append(row)
        styling.append([DISPUTED_STYLE if c.id in disputed_ids else ""] * len(row))
    ranking_rows = []
    for r in detail.rankings:
        # The annotator saw the candidates shuffled and wrote their rationale in the letters
        # they saw: the order is given in those letters, with what each is in this table.
        seen = {cid: candidate_letter(i) for i, cid in enumerate(r.shown)}
        if r.skipped:
            kind, order = "skipped", ""
        else:
            kind = "all bad" if r.all_bad else "ranked"
            order = _order_text(r.ranks, seen or letter) if r.ranks else ""
        mapping = ", ".join(f"{seen[cid]}={letter.get(cid, '?')}" for cid in r.shown)
        ranking_rows.append([
            r.ranking_id, r.annotator, kind, order, mapping, r.rationale or "",
            r.demonstration or "", _utc(r.submitted_at),
            "latest" if r.is_latest else f"revised by {r.superseded_by}",
            "" if r.suggestion_scorer is None else
            f"{browser.scorer_name(r.suggestion_scorer)}: "
            f"{'accepted' if r.suggestion_accepted else 'changed'}"])
    disagreement = detail.disagreement
    disputed = [f"{letter[a]}–{letter[b]}" for a, b in detail.disputed_pairs]
    summary = (f"Item {detail.item_id} · prompt {detail.prompt_id} · run {detail.run_id}"
               + (" · gold" if detail.is_gold else "")
               + " · disagreement " + ("n/a (fewer than two rankings)" if disagreement is None
                                       else f"{disagreement:.2f} ({detail.judged_pairs - detail.agreeing_pairs}"
                                            f" of {detail.judged_pairs} judgment pairs differ)")
               + (f" · disputed pairs: {', '.join(disputed)}" if disputed else "")
               + (f" · held by: {', '.join(detail.holders)}" if detail.holders else "")
               + (f" · tags: {', '.join(detail.tags)}" if detail.tags else ""))
    return ItemView(summary, conversation_html(detail.messages), headers, rows, styling,
                    RANKING_HEADERS, ranking_rows, disputed)


RANKING_HEADERS = ["vote", "annotator", "kind", "order as they saw it (best first)",
                   "their letters = here", "rationale", "written answer", "submitted (UTC)",
                   "version", "suggestion"]


def _order_text(ranks: dict[int, int], letter: dict[int, str]) -> str:
    """"B > A = C": best first, ties joined by "="."""
    by_rank: dict[int, list[str]] = {}
    for cid, rank in ranks.items():
        by_rank.setdefault(rank, []).append(letter.get(cid, str(cid)))
    return " > ".join(" = ".join(sorted(v)) for _, v in sorted(by_rank.items()))


def _utc(t: float | None) -> str:
    from datetime import datetime, timezone

    return "" if t is None else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M")
