"""The shared training layer: step plans, evaluation spread, checkpoints and resume, the
optimizer and schedule, policy loading, LoRA merging and saving."""

import json

import pytest
import torch

from data.preferences import PreferenceSourceError
from training import checkpoints, models, optim, plan


def test_step_plan_arithmetic_and_its_refusal():
    p = plan.StepPlan(train_pairs=21, world_size=2, per_device_batch_size=3,
                      gradient_accumulation_steps=2, epochs=2, max_steps=None)
    p.check()
    assert (p.micro_batches_per_step, p.global_batch_size) == (4, 12)
    assert p.steps_per_epoch == 2 and p.total_steps == 4  # 12 + 9 (9 >= 4 micro-batches)
    assert p.epoch_and_position(3) == (1, 1)
    assert "4 steps of 12 pairs (2 processes × 3 pairs × 2 accumulation)" == p.describe()
    assert plan.StepPlan(21, 2, 3, 2, 2, max_steps=7).total_steps == 7
    with pytest.raises(PreferenceSourceError, match="only 3 training pairs for 4 micro-batches"):
        plan.StepPlan(3, 2, 3, 2, 1, None).check()


def test_spread_gives_every_rank_the_same_number_of_forwards_and_each_chunk_once():
    for n_chunks, world in ((5, 2), (1, 3), (6, 3), (0, 2)):
        runs = [list(plan.spread(n_chunks, world, rank)) for rank in range(world)]
        assert len({len(r) for r in runs}) == 1
        real = sorted(i for r in runs for i, is_real in r if is_real)
        assert real == list(range(n_chunks))
        assert all(i == 0 for r in runs for i, is_real in r if not is_real)


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)


def accelerated(seed=0):
    from accelerate import Accelerator

    torch.manual_seed(seed)
    accelerator = Accelerator(cpu=True)
    model = Tiny()
    optimizer = optim.adamw(model.parameters(), lr=0.1)
    scheduler = optim.lr_scheduler("linear", optimizer, warmup_ratio=0.0, total_steps=10)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    return accelerator, model, optimizer, scheduler


def step(model, optimizer, scheduler):
    loss = model.layer(torch.ones(2, 3)).pow(2).sum()
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def test_a_checkpoint_brings_back_model_optimizer_and_schedule(tmp_path):
    accelerator, model, optimizer, scheduler = accelerated()
    fingerprint = {"seed": 0, "steps": 10}
    assert checkpoints.resume_checkpoint(accelerator, tmp_path, fingerprint, resume=True) is None
    for done in (1, 2, 3):
        step(model, optimizer, scheduler)
        checkpoints.save_checkpoint(accelerator, tmp_path, done, {"plan": fingerprint}, keep=2)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step-0000002", "step-0000003"]
    step(model, optimizer, scheduler)  # step 4, which a fresh run must reproduce
    expected = model.layer.weight.detach().clone()

    accelerator, model, optimizer, scheduler = accelerated(seed=1)  # other starting weights
    messages = []
    state = checkpoints.resume_checkpoint(accelerator, tmp_path, fingerprint, resume=True,
                                          say=messages.append)
    assert state["step"] == 3 and "step 3" in messages[0]
    assert scheduler.get_last_lr()[0] == pytest.approx(0.1 * 7 / 10)
    step(model, optimizer, scheduler)
    torch.testing.assert_close(model.layer.weight, expected, atol=0, rtol=0)

    with pytest.raises(ValueError, match="made with other data or settings"):
        checkpoints.resume_checkpoint(accelerator, tmp_path, {"seed": 1}, resume=True)
    # Not resuming clears the old checkpoints, so a later resume cannot mix two runs.
    assert checkpoints.resume_checkpoint(accelerator, tmp_path, {"seed": 1}, resume=False) is None
    assert not (tmp_path / "checkpoints").exists()


def test_latest_checkpoint_skips_incomplete_ones_and_names_a_corrupt_one(tmp_path):
    root = tmp_path / "checkpoints"
    for step_, complete in ((5, True), (9, False)):
        (root / f"step-{step_:07d}").mkdir(parents=True)
        if complete:
            (root / f"step-{step_:07d}" / "trainer_state.json").write_text(
                json.dumps({"step": step_, "plan": {}}))
    path, state = checkpoints.latest_checkpoint(tmp_path)
    assert path.name == "step-0000005" and state["step"] == 5
    (root / "step-0000005" / "trainer_state.json").write_text("{trunc")
    with pytest.raises(ValueError, match="step-0000005 is corrupt.*--no-resume"):
        checkpoints.latest_checkpoint(tmp_path)
    assert checkpoints.latest_checkpoint(tmp_path / "nothing") is None


def test_adamw_takes_the_reference_betas_and_weight_decay():
    opt = optim.adamw([torch.nn.Parameter(torch.ones(2))], lr=1e-3, betas=(0.9, 0.95),
                      weight_decay=1e-6)
    group = opt.param_groups[0]
    assert group["betas"] == (0.9, 0.95) and group["weight_decay"] == 1e-6
    assert optim.adamw([torch.nn.Parameter(torch.ones(2))], lr=1e-3).param_groups[0][
        "betas"] == (0.9, 0.999)


def test_lr_scheduler_warms_up_then_decays():
    param = torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([param], lr=1.0)
    scheduler = optim.lr_scheduler("linear", opt, warmup_ratio=0.2, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(scheduler.get_last_lr()[0])
        opt.step()
        scheduler.step()
    assert lrs[:3] == pytest.approx([0.0, 0.5, 1.0]) and lrs[-1] == pytest.approx(0.125)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        optim.lr_scheduler("exponential", opt, warmup_ratio=0, total_steps=1)


def test_lora_settings_from_rank():
    assert models.LoraSettings.from_rank(0) is None
    lora = models.LoraSettings.from_rank(4)
    assert (lora.r, lora.alpha, lora.scaling) == (4, 8, 2.0)
    assert models.LoraSettings.from_rank(4, 2.0).scaling == 0.5


def test_load_policy_turns_dropout_off_and_lora_trains_only_adapters(tiny_model_dir):
    import transformers

    config = transformers.AutoConfig.from_pretrained(tiny_model_dir)
    assert hasattr(config, "attention_dropout")
    policy = models.load_policy(tiny_model_dir)
    assert policy.config.attention_dropout == 0.0
    assert all(m.p == 0.0 for m in policy.modules() if isinstance(m, torch.nn.Dropout))
    lora = models.load_policy(tiny_model_dir, lora=models.LoraSettings.from_rank(2))
    trained = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    with pytest.raises(models.ModelNotFoundError, match="cannot load model"):
        models.load_policy(str(tiny_model_dir) + "-missing")


def test_merged_lora_equals_peft_merge_and_saves_a_plain_folder(tiny_model_dir, tmp_path):
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    lora = models.LoraSettings(4, 8.0)
    peft_model = models.load_policy(tiny_model_dir, lora=lora)
    torch.manual_seed(0)
    with torch.no_grad():  # fresh adapters are zero; make them matter
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.add_(torch.randn_like(param) * 0.05)
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        expected = peft_model(ids).logits
    accelerator = Accelerator(cpu=True)
    tokenizer = models.load_tokenizer(tiny_model_dir)
    assert models.save_trained_model(accelerator, peft_model, tokenizer, tmp_path / "out",
                                     lora=lora, padding_side="left")
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    with torch.no_grad():
        torch.testing.assert_close(saved(ids).logits, expected, atol=1e-5, rtol=0)
    assert saved.state_dict().keys() == AutoModelForCausalLM.from_pretrained(
        tiny_model_dir).state_dict().keys()
    assert models.load_tokenizer(str(tmp_path / "out"), padding_side="right").pad_token


def test_check_tokenizer_matches_names_both_sizes(tiny_model_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = models.load_tokenizer(tiny_model_dir)
    models.check_tokenizer_matches(tiny_model_dir, tokenizer)
    LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=1)).save_pretrained(tmp_path / "small")
    with pytest.raises(ValueError, match="vocabulary has 100: they do not belong together"):
        models.check_tokenizer_matches(str(tmp_path / "small"), tokenizer)


def test_recipe_configs_refuse_impossible_optimizer_settings(tmp_path):
    from policy.ppo import PPOConfig
    from policy.rebel import RebelConfig
    from policy.sft import SFTConfig
    from reward.train_bt import RewardTrainConfig

    for make in (RebelConfig, RewardTrainConfig, SFTConfig, PPOConfig):
        with pytest.raises(ValueError, match="adam betas must be two numbers in"):
            make(output=str(tmp_path), adam_betas=(0.9, 1.0))
        with pytest.raises(ValueError, match="weight decay must be 0 or more"):
            make(output=str(tmp_path), weight_decay=-1.0)
        with pytest.raises(ValueError, match="max grad norm must be 0"):
            make(output=str(tmp_path), max_grad_norm=-1.0)
        assert make(output=str(tmp_path), max_grad_norm=None).max_grad_norm is None


def test_metrics_keep_full_precision_and_reach_tensorboard_and_wandb(tmp_path, monkeypatch):
    from tests.tracker_readers import tensorboard_scalars, wandb_run
    from training.accel import make_accelerator
    from training.metrics import MetricsLog, read_metrics

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    accelerator = make_accelerator(gradient_accumulation_steps=1, bf16=False,
                                   report_to=("tensorboard", "wandb"), output=out)
    log = MetricsLog(out / "metrics.jsonl", accelerator=accelerator,
                     settings={"learning_rate": 3e-7, "adam_betas": (0.9, 0.95), "limit": None})
    logged = {1: {"train/loss": 0.123456789, "train/learning_rate": 3e-7},
              2: {"train/loss": 1 / 3, "train/learning_rate": 2.5e-9}}
    for step, metrics in logged.items():
        log.log(step, metrics)
    log.close()
    assert read_metrics(out / "metrics.jsonl") == [{"step": s, **m} for s, m in logged.items()]
    scalars = tensorboard_scalars(out / "tensorboard")
    for step, metrics in logged.items():
        for key, value in metrics.items():
            assert scalars[key][step] == pytest.approx(value, rel=1e-6)  # float32 on disk
    history, config = wandb_run(out)
    assert history == logged
    assert config["learning_rate"] == 3e-7 and config["adam_betas"] == "[0.9, 0.95]"


def test_unknown_or_missing_trackers_are_refused(tmp_path, monkeypatch):
    from training.metrics import check_report_to, make_trackers

    assert check_report_to(["none"]) == () and check_report_to(("wandb", "wandb")) == ("wandb",)
    with pytest.raises(ValueError, match="unknown tracker 'mlflow'"):
        check_report_to(["mlflow"])
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ValueError, match="needs the wandb package: pip install wandb"):
        make_trackers(["wandb"], tmp_path)


def test_the_closing_line_names_the_model_its_parts_a_resume_and_what_was_dropped():
    from training.metrics import saved_line

    assert saved_line("policy", "out/p", ["10 training pairs", "3 steps"],
                      dropped={"too long": 2, "empty": 0}, resumed_from_step=2) == \
        "policy saved to out/p: 10 training pairs; 3 steps; resumed at step 2; dropped: 2 too long"
    assert saved_line("reward model", "rm", ["1 step"], dropped={}) == \
        "reward model saved to rm: 1 step; dropped: none"
    assert saved_line("x", "y", ["z"]) == "x saved to y: z"


def test_the_memory_estimate_counts_the_weights_of_the_model_it_describes():
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.memory import parameter_count, training_bytes

    for tied in (True, False):
        config = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=160,
                             num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                             tie_word_embeddings=tied)
        model = LlamaForCausalLM(config)
        assert parameter_count(config) == sum(p.numel() for p in model.parameters())
    n = parameter_count(config)
    # Weights + gradients + AdamW's moments, plus (6h + 3 × inner) activations a token a layer.
    assert training_bytes(config, micro_batch_tokens=0) == 16 * n
    assert training_bytes(config, micro_batch_tokens=10) == 16 * n + 10 * 3 * (6 * 64 + 3 * 160) * 4
    assert training_bytes(config, micro_batch_tokens=10, gradient_checkpointing=True) < \
        training_bytes(config, micro_batch_tokens=10)
    assert training_bytes(config, micro_batch_tokens=0, world=2, zero3=True) == 8 * n
    assert training_bytes(config, micro_batch_tokens=0, trainable_share=0.0) == 4 * n
    # A policy holds one chunk of logits at a time: fp32 logits, exponentials, gradient and
    # the recomputed copy.
    assert training_bytes(config, micro_batch_tokens=0, logit_elements=1000) == \
        16 * n + 16 * 1000
