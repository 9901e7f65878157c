"""Scoring functions the simulated-annotator tests import as MODULE:FUNCTION."""


def answer_number(prompts, responses):
    """The number after the colon in the fixture's "Answer p.j: N" candidates."""
    return [float(text.rsplit(":", 1)[-1]) if ":" in text else 0.0 for text in responses]


def shorter_is_better(prompts, responses):
    return [-float(len(text)) for text in responses]


def one_score_too_few(prompts, responses):
    return [0.0] * (len(responses) - 1)
