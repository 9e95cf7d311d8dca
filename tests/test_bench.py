"""lib.bench: markdown sections update in place; the per-model measurement returns sane numbers."""
import pytest
import torch

from lib import bench
from lib.models import create_model


def test_update_section_replaces_only_its_block(tmp_path):
    md = tmp_path / "B.md"
    md.write_text("# Benchmarks\n\nprose before\n")
    bench.update_section(md, "models", "table one")
    bench.update_section(md, "input", "input table")
    bench.update_section(md, "models", "table two")
    text = md.read_text()
    assert "prose before" in text and "input table" in text
    assert "table one" not in text and text.count("table two") == 1
    assert text.index("<!-- bench:models -->") < text.index("<!-- bench:input -->")


def test_forward_flops_counts_a_known_layer():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert bench.forward_flops(conv) == pytest.approx(2 * 3 * 8 * 9 * 128 * 128)


def test_forward_flops_of_resnet34_regressor():
    # timm resnet34 at 224 is ~3.6 GMACs; at 128x128 that is ~1.2 GMACs = ~2.4 GFLOPs
    assert 2.0e9 < bench.forward_flops(create_model("resnet34")) < 2.8e9


def test_bench_one_model_cpu():
    r = bench.bench_one_model("cpm", batch=2, steps=1, device="cpu", amp="off")
    assert r["model"] == "cpm" and r["train img/s"] > 0 and r["infer img/s"] > 0
    assert r["peak mem (GiB)"] > 0 and r["GFLOPs/img (fwd)"] > 0 and r["% of peak"] is None
