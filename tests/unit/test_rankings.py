import pytest

from data.rankings import RankedPair, RankingError, ranking_to_pairs, validate_submission


def test_full_ranking_gives_k_choose_2_pairs_in_shown_order():
    # Shown order 10, 20, 30, 40 with ranks 2, 1, 4, 3.
    assert ranking_to_pairs([10, 20, 30, 40], [2, 1, 4, 3]) == [
        RankedPair(20, 10), RankedPair(10, 30), RankedPair(10, 40), RankedPair(20, 30), RankedPair(20, 40), RankedPair(40, 30),
    ]


def test_ties_are_marked_and_keep_shown_order():
    assert ranking_to_pairs([1, 2, 3], [1, 1, 2]) == [
        RankedPair(1, 2, tie=True), RankedPair(1, 3), RankedPair(2, 3),
    ]
    assert all(p.tie for p in ranking_to_pairs([5, 6, 7], [2, 2, 2]))


def test_demonstration_beats_every_candidate_and_adds_k_pairs():
    pairs = ranking_to_pairs([1, 2, 3], [1, 2, 3], demonstration_id=99)
    assert pairs[:3] == [RankedPair(99, 1), RankedPair(99, 2), RankedPair(99, 3)]
    assert len(pairs) == 3 + 3


def test_unranked_all_bad_gives_only_demonstration_pairs():
    assert ranking_to_pairs([1, 2], None) == []
    assert ranking_to_pairs([1, 2], None, demonstration_id=7) == [RankedPair(7, 1), RankedPair(7, 2)]


def test_validation_accepts_complete_rankings_with_ties():
    sub = validate_submission([3, 1, 2], [1, 1, 3], rationale="  close call ")
    assert (sub.ranks, sub.has_tie, sub.rationale) == ((1, 1, 3), True, "close call")
    assert validate_submission([3, 1], ["2", "1"]).ranks == (2, 1)


@pytest.mark.parametrize("ids,ranks,kwargs,message", [
    ([1, 2, 3], [1, None, 2], {}, "B has no rank"),
    ([1, 2, 3], None, {}, "rank every candidate, or mark all candidates as bad, or skip"),
    ([1, 2, 3], [None, None, None], {}, "rank every candidate"),
    ([1, 2, 3], [1, 2], {}, "expected 3 ranks, got 2"),
    ([1, 2, 3], [0, 1, 2], {}, "between 1 and 3"),
    ([1, 2, 3], [1, 2, 4], {}, "between 1 and 3"),
    ([1, 2, 3], [1, "x", 2], {}, "whole numbers"),
    ([1, 1], [1, 2], {}, "appears twice"),
    ([], [], {}, "no candidates"),
    ([1, 2], None, {"skipped": True, "all_bad": True}, "cannot also"),
    ([1, 2], [1, 2], {"rationale": "x" * 20_001}, "rationale is too long"),
])
def test_invalid_submissions_are_refused(ids, ranks, kwargs, message):
    with pytest.raises(RankingError, match=message):
        validate_submission(ids, ranks, **kwargs)


def test_skip_and_all_bad_need_no_ranks():
    skip = validate_submission([1, 2], [1, None], skipped=True)
    assert (skip.skipped, skip.ranks) == (True, None)
    bad = validate_submission([1, 2], None, all_bad=True, demonstration=" mine ")
    assert (bad.all_bad, bad.ranks, bad.demonstration) == (True, None, "mine")
