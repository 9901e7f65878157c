"""The listwise objectives and annotator weights in the reward, REBEL and DPO recipes, on tiny
random Llamas and a real labeling database: a ranking of two equals its pair through the
models, the commands train from the database, and weights all equal change nothing."""

from pathlib import Path

import pytest
import torch

from data import labeling, store
from data.rankings import Submission
from data.scored_pairs import RankedGroup, ScoredPair, ranks_to_rewards
from tests.labeling_fixtures import make_labeling_db


@pytest.fixture(scope="module")
def ranked_db(tmp_path_factory) -> str:
    """Four items of three candidates, ranked by two annotators (ties included)."""
    path = make_labeling_db(tmp_path_factory.mktemp("listwise") / "app.db", n_prompts=4)
    db = store.open_store(path)
    orders = {"ann": [(1, 2, 3), (2, 2, 1), (3, 1, 2), (1, 3, 2)],
              "bob": [(1, 3, 2), (2, 1, 1), (1, 2, 3), (2, 1, 3)]}
    for name, ranks in orders.items():
        user = labeling.get_user(db, name)
        for r in ranks:
            task = labeling.next_assignment(db, user.id, labeling.QueuePolicy(overlap=2))
            labeling.submit_assignment(db, task.id, user.id,
                                       Submission(tuple(task.candidate_ids), r))
    db.close()
    return path


PROMPT = [{"role": "user", "content": "Name a colour."}]
TEXTS = ("Green, like the grass.", "Blue.", "I would rather not say which one.")


def test_reward_ranking_of_two_equals_its_pair(tiny_model_dir):
    from data.preferences import PreferencePair
    from reward.batches import collate, collate_rankings, encode_pairs, encode_rankings
    from reward.modeling import load_reward_model, load_reward_tokenizer
    from reward.train_bt import RewardTrainConfig, batch_loss

    tokenizer = load_reward_tokenizer(tiny_model_dir)
    torch.manual_seed(0)
    model = load_reward_model(tiny_model_dir, tokenizer).eval()
    config = RewardTrainConfig(output="unused", ties="include")
    groups = [RankedGroup(PROMPT, TEXTS[:2], (1, 2), (1.0, 0.0), 1, 1, (1, 2)),
              RankedGroup(PROMPT, TEXTS[1:], (2, 1), (0.0, 1.0), 1, 2, (2, 3)),
              RankedGroup(PROMPT, TEXTS[::2], (1, 1), (0.0, 0.0), 1, 3, (1, 3))]
    pairs = [PreferencePair(PROMPT, [{"role": "assistant", "content": c}],
                            [{"role": "assistant", "content": r}], tie=tie)
             for c, r, tie in ((TEXTS[0], TEXTS[1], False), (TEXTS[2], TEXTS[1], False),
                               (TEXTS[0], TEXTS[2], True))]
    rankings, _ = encode_rankings(tokenizer, groups, 256)
    encoded, _ = encode_pairs(tokenizer, pairs, 256)
    with torch.no_grad():
        listwise, rewards, _ = batch_loss(model, collate_rankings(rankings, 0), config)
        pairwise, chosen, rejected = batch_loss(model, collate(encoded, 0), config)
    torch.testing.assert_close(listwise, pairwise)
    assert rewards[0, 0] == chosen[0] and rewards[1, 1] == chosen[1]
    # A third candidate makes a different loss than the sum of its pairs.
    three, _ = encode_rankings(tokenizer, [RankedGroup(PROMPT, TEXTS, (1, 2, 3),
                                                       (1.0, 0.5, 0.0), 1, 4, (1, 2, 3))], 256)
    with torch.no_grad():
        whole, _, _ = batch_loss(model, collate_rankings(three, 0), config)
    assert whole.shape == (1,) and whole.item() > 0


@pytest.mark.parametrize("recipe", ["rebel", "dpo"])
def test_policy_ranking_of_two_equals_its_pair(recipe, tiny_model_dir):
    from policy import dpo, rebel
    from policy.pair_batches import collate, encode_scored_pairs, encode_scored_rankings
    from training.models import load_policy, load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir, padding_side="right")
    model = load_policy(tiny_model_dir)
    module = rebel if recipe == "rebel" else dpo
    config = (rebel.RebelConfig(output="unused", eta=2.0) if recipe == "rebel"
              else dpo.DPOConfig(output="unused", beta=0.5))
    groups = [RankedGroup(PROMPT, TEXTS[:2], (1, 2), tuple(ranks_to_rewards([1, 2])), 1, 1,
                          (1, 2)),
              RankedGroup(PROMPT, TEXTS[1:], (2, 1), tuple(ranks_to_rewards([2, 1])), 1, 2,
                          (2, 3))]
    pairs = [ScoredPair(PROMPT, TEXTS[0], TEXTS[1], 1.0, 0.0),
             ScoredPair(PROMPT, TEXTS[2], TEXTS[1], 1.0, 0.0)]
    limits = dict(max_prompt_tokens=256, max_response_tokens=256)
    rankings, _ = encode_scored_rankings(tokenizer, groups, **limits)
    encoded, _ = encode_scored_pairs(tokenizer, pairs, **limits)
    ref_pairs = torch.tensor([[-30.0, -20.0], [-25.0, -20.0]])
    ref_rankings = torch.tensor([[-30.0, -20.0], [-20.0, -25.0]])
    with torch.no_grad():
        listwise, logp, _ = module.batch_loss(
            model, collate(rankings, ref_rankings, tokenizer.pad_token_id), config)
        pairwise, chosen, _ = module.batch_loss(
            model, collate(encoded, ref_pairs, tokenizer.pad_token_id), config)
    torch.testing.assert_close(listwise, pairwise)
    assert logp[0, 0] == chosen[0]


def test_commands_train_on_whole_rankings(ranked_db, tiny_model_dir, tmp_path, capsys):
    from launch.cli import main

    common = ["--db", ranked_db, "--model", tiny_model_dir, "--eval-fraction", "0.25",
              "--no-progress", "--objective", "listwise"]
    assert main(["train", "reward", "--output", str(tmp_path / "rm"), *common]) == 0
    out = capsys.readouterr().out
    assert "6 training rankings, 2 held out" in out  # 8 rankings: one per vote
    # REBEL's listwise run is the weights test's; DPO's goes through the command here.
    assert main(["train", "dpo", "--output", str(tmp_path / "dpo"), *common]) == 0
    assert "6 training rankings, 2 held out" in capsys.readouterr().out
    assert (Path(tmp_path) / "dpo" / "model.safetensors").exists()


def test_listwise_dpo_refuses_ipo(ranked_db, tiny_model_dir, tmp_path, capsys):
    from launch.cli import main

    assert main(["train", "dpo", "--db", ranked_db, "--output", str(tmp_path / "o"),
                 "--objective", "listwise", "--loss", "ipo"]) != 0
    assert "use --loss sigmoid" in capsys.readouterr().err


def test_equal_weights_give_exactly_the_unweighted_run(ranked_db, tiny_model_dir, tmp_path):
    """Every annotator at weight 3 is rescaled to 1: the same updates as no weights."""
    from safetensors.torch import load_file

    from data.scored_pairs import rankings_from_db, with_weights
    from policy.rebel import RebelConfig, train_rebel

    db = store.open_store(ranked_db)
    rankings = rankings_from_db(db)
    users = {g.user_id for g in rankings.groups}
    settings = dict(model=tiny_model_dir, db=ranked_db, objective="listwise", eval_fraction=0.0,
                    learning_rate=1e-3, per_device_batch_size=4, epochs=1)
    train_rebel(RebelConfig(output=str(tmp_path / "a"), **settings), pairs=rankings,
                progress=False)
    train_rebel(RebelConfig(output=str(tmp_path / "b"), **settings),
                pairs=with_weights(rankings, {u: 3.0 for u in users}), progress=False)
    skewed = {u: (0.0 if i == 0 else 1.0) for i, u in enumerate(sorted(users))}
    train_rebel(RebelConfig(output=str(tmp_path / "c"), **settings),
                pairs=with_weights(rankings, skewed), progress=False)
    a, b, c = (load_file(str(tmp_path / x / "model.safetensors")) for x in "abc")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)
    assert any(not torch.equal(a[key], c[key]) for key in a)


def test_reliability_weights_train_pairs_from_the_command(ranked_db, tiny_model_dir, tmp_path,
                                                          capsys):
    from launch.cli import main

    common = ["--db", ranked_db, "--model", tiny_model_dir, "--eval-fraction", "0",
              "--no-progress", "--annotator-weights", "reliability"]
    assert main(["train", "reward", "--output", str(tmp_path / "rm"), *common]) == 0
    assert "training pairs" in capsys.readouterr().out
    assert main(["train", "rebel", "--data", ranked_db, "--output", str(tmp_path / "rebel"),
                 "--lr", "1e-3", *common[2:]]) == 0
    # A preference file has no annotators to weigh.
    (tmp_path / "p.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    assert main(["train", "reward", "--data", str(tmp_path / "p.jsonl"), "--output",
                 str(tmp_path / "x"), "--annotator-weights", "reliability"]) != 0
    assert "use --db instead of --data" in capsys.readouterr().err
