"""Evaluating a reward model: accuracy on preference pairs, and agreement with the humans who
ranked candidates in the app."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from data.preferences import PreferencePair


@dataclass(frozen=True)
class PairAccuracy:
    pairs: int
    """Pairs with a preference (ties are not scored)."""
    correct: int
    """Pairs where the chosen response scored strictly higher."""
    mean_margin: float
    """Mean of score(chosen) − score(rejected)."""
    ties_skipped: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.pairs if self.pairs else float("nan")


def pair_accuracy(scorer, pairs: Sequence[PreferencePair], *, batch_size: int = 8) -> PairAccuracy:
    judged = [p for p in pairs if not p.tie]
    conversations = [p.chosen_conversation() for p in judged]
    conversations += [p.rejected_conversation() for p in judged]
    scores = scorer.score(conversations, batch_size=batch_size)
    margins = [scores[i] - scores[len(judged) + i] for i in range(len(judged))]
    return PairAccuracy(len(judged), sum(m > 0 for m in margins),
                        sum(margins) / len(margins) if margins else float("nan"),
                        ties_skipped=len(pairs) - len(judged))


@dataclass(frozen=True)
class HumanAgreement:
    comparisons: int
    """Human judgments with a preference (one per annotator per pair; ties left out)."""
    agreed: int
    """Judgments where the model scored the human's choice strictly higher."""
    candidates_scored: int
    """Candidates the model scored for this."""
    stored_scores_used: int = 0
    """Candidates whose score by the same scorer was already in ``model_scores``."""

    @property
    def agreement(self) -> float:
        return self.agreed / self.comparisons if self.comparisons else float("nan")


def human_agreement(db, scorer, *, batch_size: int = 8) -> HumanAgreement | None:
    """How often the model agrees with each human pairwise judgment in the database; None when
    the database holds no judgments with a preference."""
    from data import store
    from data.preferences import PreferenceSourceError, load_db_pairs

    try:
        pairs = [p for p in load_db_pairs(db).pairs if not p.tie]
    except PreferenceSourceError:
        return None
    if not pairs:
        return None
    conversations: dict[int, list[dict]] = {}
    for p in pairs:
        conversations[p.chosen_candidate_id] = p.chosen_conversation()
        conversations[p.rejected_candidate_id] = p.rejected_conversation()
    scores = {cid: s.score for cid, s in store.model_scores(db, scorer.name, conversations).items()}
    missing = [cid for cid in conversations if cid not in scores]
    for cid, value in zip(missing, scorer.score([conversations[c] for c in missing],
                                                batch_size=batch_size)):
        scores[cid] = value
    agreed = sum(scores[p.chosen_candidate_id] > scores[p.rejected_candidate_id] for p in pairs)
    return HumanAgreement(len(pairs), agreed, len(missing), len(conversations) - len(missing))
