"""The suite's CI rule (tests/conftest.py): with ``CI`` set every skip fails the run, except tests marked ``gpu``.

Each case runs an inner pytest session in a subprocess, with the suite's own conftest.py copied
into a fresh folder, the way CI runs the suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SUITE_CONFTEST = Path(__file__).parents[1] / "conftest.py"

MODULE_LEVEL_SKIP = """
import pytest

pytest.importorskip("seesay_no_such_module", reason="needs an extra that is not installed")


def test_never_runs():
    pass
"""

RUN_TIME_SKIPS = """
import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(True, reason="needs a CUDA GPU")]


def test_on_the_gpu():
    pass
"""

PLAIN = """
import pytest


def test_passes():
    pass


def test_skips_at_run_time():
    pytest.importorskip("seesay_no_such_module")
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A folder with the suite's conftest.py and its marker list."""
    pytester.makeconftest(SUITE_CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a CUDA GPU\n")
    return pytester


def test_a_module_level_importorskip_fails_the_run_in_ci(suite: pytest.Pytester,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    suite.makepyfile(test_needs_an_extra=MODULE_LEVEL_SKIP, test_plain="def test_passes():\n    pass\n")
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != pytest.ExitCode.OK
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_needs_an_extra.py skipped while being collected, in CI*"])


def test_outside_ci_a_module_level_importorskip_stays_a_skip(suite: pytest.Pytester,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    suite.makepyfile(test_needs_an_extra=MODULE_LEVEL_SKIP, test_plain="def test_passes():\n    pass\n")
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)


def test_in_ci_a_run_time_skip_fails_and_a_gpu_skip_passes(suite: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    suite.makepyfile(test_gpu=RUN_TIME_SKIPS, test_plain=PLAIN)
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*test_gpu.py*needs a CUDA GPU*",
                                 "FAILED*test_plain.py::test_skips_at_run_time*"])
