"""The live soak (benchmarks/soak.py) for two minutes: ``streamgen play`` with the default model on
the paced JACK dummy device plays without underflows, in flat memory, exactly what it saves."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from live_audio import rig_missing

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import soak  # noqa: E402


@pytest.mark.skipif(rig_missing() is not None, reason=str(rig_missing()))
def test_two_minute_soak(tmp_path: Path) -> None:
    seed = random.randrange(10_000)  # a fresh stream each run (reported on failure)
    result = soak.soak(2.0, tmp_path, seed=seed, log=lambda _: None)
    assert result["underflows"] == 0, (seed, result["player_summary"])
    assert result["samples_played"] == result["samples_saved"] == 2 * 60 * 16000
    assert result["played_equals_saved"] and result["after_played"] == 0
    growth = result["rss_growth_after_first_minute_of_playback_mb"]
    assert growth is not None and growth < soak.RSS_GROWTH_LIMIT_MB, result["memory"]
    assert soak.passed(result)
    assert "| underflows | 0 (0 flagged by the device, 0 samples" in soak.markdown(result)
