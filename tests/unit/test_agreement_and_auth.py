import pytest

from data.agreement import gold_accuracy, krippendorff_alpha_ordinal, pairwise_agreement, ratio
from labeler.auth import generate_password, hash_password, verify_password


def _row(item, annotator, ids, ranks, **extra):
    return {"item_id": item, "annotator": annotator, "candidate_ids": ids, "ranks": ranks,
            **extra}


def test_pairwise_agreement_counts_candidate_pairs_on_shared_items():
    rows = [
        _row(1, "ann", [1, 2, 3], [1, 2, 3]),
        _row(1, "bob", [3, 1, 2], [3, 1, 2]),  # bob: 1 > 2 > 3, shown in another order
        _row(2, "ann", [4, 5], [1, 2]),
        _row(2, "bob", [4, 5], [2, 1]),  # disagrees
        _row(2, "cat", [5, 4], [1, 1]),  # tie: disagrees with both
        _row(3, "cat", [6, 7], [1, 2]),  # nobody else: no pairs
    ]
    assert pairwise_agreement(rows) == {
        ("ann", "bob"): (3, 4), ("ann", "cat"): (0, 1), ("bob", "cat"): (0, 1),
    }


def test_alpha_is_one_for_identical_rankings_and_none_without_overlap():
    same = [_row(1, "a", [1, 2, 3], [1, 2, 3]), _row(1, "b", [1, 2, 3], [1, 2, 3])]
    assert krippendorff_alpha_ordinal(same) == pytest.approx(1.0)
    assert krippendorff_alpha_ordinal([_row(1, "a", [1, 2], [1, 2])]) is None


def test_alpha_ordinal_matches_a_hand_computed_value():
    # Two coders, three units, values (1,1), (2,3), (3,3).
    # Coincidences: o11=2, o22=0, o23=o32=1, o33=2 -> n1=2, n2=1, n3=3, n=6.
    # Ordinal delta^2: d12=(2+1-1.5)^2=2.25, d23=(1+3-2)^2=4, d13=(2+1+3-2.5)^2=12.25.
    # D_o-part = 2*o23*d23 = 8; expected part = 2*(n1 n2 d12 + n2 n3 d23 + n1 n3 d13)
    #          = 2*(4.5 + 12 + 73.5) = 180; alpha = 1 - (n-1)*8/180 = 1 - 40/180.
    rows = [_row(1, "a", [1, 2, 3], [1, 2, 3]), _row(1, "b", [1, 2, 3], [1, 3, 3])]
    assert krippendorff_alpha_ordinal(rows) == pytest.approx(1 - 40 / 180)


def test_alpha_agrees_with_the_reference_implementation():
    krippendorff = pytest.importorskip("krippendorff", reason="reference package not installed")
    import numpy as np

    rows = [
        _row(1, "a", [1, 2, 3, 4], [1, 2, 3, 4]), _row(1, "b", [1, 2, 3, 4], [2, 1, 3, 4]),
        _row(1, "c", [1, 2, 3, 4], [1, 3, 2, 4]),
        _row(2, "a", [5, 6, 7], [1, 1, 3]), _row(2, "c", [5, 6, 7], [3, 2, 1]),
        _row(3, "b", [8, 9], [1, 2]),
    ]
    units = sorted({(r["item_id"], c) for r in rows for c in r["candidate_ids"]})
    coders = ["a", "b", "c"]
    table = np.full((3, len(units)), np.nan)
    for r in rows:
        for c, rank in zip(r["candidate_ids"], r["ranks"]):
            table[coders.index(r["annotator"]), units.index((r["item_id"], c))] = rank
    expected = krippendorff.alpha(reliability_data=table, level_of_measurement="ordinal")
    assert krippendorff_alpha_ordinal(rows) == pytest.approx(expected)


def test_gold_accuracy_counts_only_strict_gold_pairs():
    gold = {"gold_order": [1, 2, 3], "gold_ranks": [1, 2, 2]}  # 1 > 2, 1 > 3, 2 ~ 3
    rows = [
        _row(9, "ann", [3, 2, 1], [3, 2, 1], **gold),  # ann: 1 > 2 > 3 -> both strict pairs
        _row(9, "bob", [1, 2, 3], [2, 1, 3], **gold),  # bob: 2 > 1 > 3 -> one of two
        _row(8, "bob", [4, 5], [1, 2], gold_ranks=None),  # not gold
    ]
    assert gold_accuracy(rows) == {"ann": (2, 2), "bob": (1, 2)}
    assert ratio((1, 2)) == 0.5 and ratio((0, 0)) is None


def test_passwords_are_salted_scrypt_hashes():
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert stored != hash_password("correct horse")  # salted
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong horse!", stored)
    assert not verify_password("correct horse", "garbage")
    with pytest.raises(ValueError, match="at least 8"):
        hash_password("short")
    assert len(generate_password()) >= 12
