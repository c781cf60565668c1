"""`redraft conformance` on the shared parity vectors: every case passes with cache, without cache and batched."""

from __future__ import annotations

import json

import pytest

from redraft.decoding.conformance import WAYS, config_from_official, run_conformance


@pytest.mark.slow
def test_every_parity_case_passes_in_all_three_ways(parity_dir):
    lines: list[str] = []
    passed, failed = run_conformance(parity_dir, emit=lines.append)
    num_cases = len(json.loads((parity_dir / "cases.json").read_text())["cases"])
    assert (passed, failed) == (num_cases, 0), "\n".join(lines)
    assert lines[-1] == f"{num_cases} passed, 0 failed"
    for line in lines[:-1]:
        assert line.startswith("PASS") and all(f"{w}: ok" in line for w in WAYS), line


def test_conformance_reports_a_wrong_expectation(parity_dir, tmp_path):
    """The tool can fail: change one expected token and the case (and exit status) says so."""
    from safetensors.torch import load_file, save_file

    spec = json.loads((parity_dir / "cases.json").read_text())
    case = next(c for c in spec["cases"] if c["kind"] == "generate")
    tensors = load_file(str(parity_dir / "expected.safetensors"))
    out = tensors[case["output"]].clone()
    out.view(-1)[0] = (out.view(-1)[0] + 1) % 100
    tensors[case["output"]] = out
    save_file(tensors, str(tmp_path / "expected.safetensors"))
    spec["cases"] = [case]
    spec["model_dir"] = str(parity_dir / spec.get("model_dir", "model"))
    (tmp_path / "cases.json").write_text(json.dumps(spec))
    lines: list[str] = []
    assert run_conformance(tmp_path, emit=lines.append) == (0, 1)
    assert lines[0].startswith("FAIL") and "mismatch at token 0" in lines[0]


def test_official_params_map_to_decode_config():
    cfg = config_from_official({"gen_length": 64, "block_length": 16, "threshold": 0.8, "editing_threshold": 0.0,
                                "max_post_steps": 4, "eos_id": 7, "eos_early_stop": True}, mask_id=9)
    assert (cfg.tau_mask, cfg.tau_edit, cfg.editing, cfg.max_post_steps, cfg.block_length) == (0.8, 0.0, True, 4, 16)
    assert (cfg.max_new_tokens, cfg.eos_ids, cfg.eos_early_stop, cfg.mask_id) == (64, (7,), True, 9)
    with pytest.raises(ValueError, match="temperature"):
        config_from_official({"gen_length": 8, "temperature": 0.5}, mask_id=9)
    with pytest.raises(ValueError, match="unsupported"):
        config_from_official({"gen_length": 8, "bogus": 1}, mask_id=9)
