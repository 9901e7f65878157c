"""The shared vLLM engine lives only while the tests that use it run: they are ordered into one
stretch, and the engine stops after the last of them."""

from types import SimpleNamespace

from tests import conftest


def fake_item(module: str, name: str, uses_engine: bool):
    return SimpleNamespace(module=SimpleNamespace(__name__=module), name=name,
                           fixturenames=("tmp_path",) + (("vllm_sampler",) if uses_engine else ()))


def test_engine_tests_run_in_one_stretch_with_each_module_kept_together():
    items = [fake_item("a", "a1", False), fake_item("gen", "g1", False),
             fake_item("gen", "g2", True), fake_item("gen", "g3", False),
             fake_item("b", "b1", False), fake_item("sync", "s1", False),
             fake_item("sync", "s2", True), fake_item("c", "c1", False)]
    conftest._group_engine_tests(items)
    assert [i.name for i in items] == ["a1", "g1", "g3", "g2", "s2", "s1", "b1", "c1"]


def test_the_engine_closes_after_the_last_test_that_uses_it(monkeypatch):
    closed = []
    engine = SimpleNamespace(close=lambda: closed.append(True))
    monkeypatch.setitem(conftest._engine, "sampler", engine)
    user, other = fake_item("gen", "g2", True), fake_item("b", "b1", False)
    conftest.pytest_runtest_teardown(user, fake_item("sync", "s2", True))
    assert closed == [] and conftest._engine["sampler"] is engine
    conftest.pytest_runtest_teardown(user, other)
    assert closed == [True] and "sampler" not in conftest._engine
    conftest.pytest_runtest_teardown(other, None)  # nothing left to close
    assert closed == [True]
