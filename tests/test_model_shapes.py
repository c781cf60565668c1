"""The released shapes are written down twice: `redraft.model.shapes` (for `inspect --shape`, the benchmarks) and
`configs/models/*.json` (config files a user can point `inspect --tp` at). They must agree."""

import json
from pathlib import Path

import pytest

from redraft.model.shapes import SHAPES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["mini", "flash"])
def test_config_files_match_the_shape_table(name):
    config = json.loads((ROOT / "configs" / "models" / f"llada2.1-{name}.json").read_text())
    for key, value in SHAPES[name].items():
        assert config.get(key) == value, (name, key, config.get(key), value)
