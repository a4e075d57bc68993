"""Every benchmark script runs and prints its comparison (tiny sizes, one repeat: no time is asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
FEW_SCENES = ["--num_scenes", "24"]  # recipe flags: the default config on fewer generated scenes

COMMANDS = {
    "backbone_throughput": (
        ["--embed_dim", "32", "--depth", "1", "--num_heads", "2", "--repeats", "1"],
        ["ratio", "MatmulPatchEmbed"],
    ),
    "heads": (
        ["--depth", "3", "--embed_dim", "64", "--side", "56", "--expressions", "1", "2", "--repeats", "1"],
        ["DepthAnythingForDepthEstimation + L1 (peer)", "N passes (peer)"],
    ),
    "resolution": (
        ["--depth", "3", "--embed_dim", "64", "--size", "56", "--resolutions", "56x56", "28x84", "--repeats", "1"],
        ["56x56 (peer)", "28x84", "segmentation step"],
    ),
    "scaling": (
        ["--embed_dim", "64", "--depth", "1", "--side", "4", "--repeats", "1"],
        ["batch / tall", "Dynamic-resolution"],
    ),
    "multitask_step": (
        ["--steps", "1", "--warmup", "1", "--depth", "1", "--embed_dim", "64", "--side", "56"],
        ["ratio trainer / plain loop"],
    ),
    "data_pipeline": (["--batches", "1", "--repeats", "1", *FEW_SCENES], ["segmentation", "data / model"]),
    "roofline": (["--repeats", "1", "--gemm_size", "256", *FEW_SCENES], ["multi-task", "before: all logits"]),
    "memory": (FEW_SCENES, ["alignment stage (projector only)", "step peak RSS"]),
    "bf16": (["--repeats", "1", *FEW_SCENES], ["multi-task round", "LLM stored in bf16", "frozen tower"]),
    "gpu": (["--smoke", "--repeats", "1"], ["1. peak", "MFU", "3. memory", "within the bf16 tolerance"]),
    "export": (
        ["--depth", "3", "--embed_dim", "64", "--side", "56", "--repeats", "1", "--models", "backbone"],
        ["eager (peer)", "torch.export", "onnxruntime", "torch.compile", "VersaViTModel"],
    ),
}


@pytest.mark.e2e  # a subprocess per benchmark script, about 2 minutes in all: CI runs them after make test
@pytest.mark.parametrize("script", sorted(COMMANDS))
def test_benchmark_runs(script):
    arguments, expected = COMMANDS[script]
    result = subprocess.run([sys.executable, str(BENCHMARKS / f"{script}.py"), *arguments], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for text in expected:
        assert text in result.stdout, (text, result.stdout[-2000:])
