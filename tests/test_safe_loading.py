"""Loading downloaded files never runs their code: every loader that could unpickle either refuses pickles or reads
them with a restricted unpickler. Each test feeds the loader a crafted pickle whose unpickling would call
`os.system("touch MARKER")` and checks that it is refused and the marker never appears."""

import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import QWEN2_VISION, TINY_HEADS, load_recipe, tiny_config

from modeling_versavit import VersaViTForDepthEstimation, VersaViTForMultiTask, VersaViTModel
from versavit_trainer.data.readers import UnsafePickleError, load_builtin_pickle, refcoco_refs


class RunsCode:
    """Unpickling this calls os.system: what a tampered file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted(path: Path, marker: Path, wrap=lambda payload: payload) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(wrap(RunsCode(marker)), handle)
    return path


REFS = [
    {"ref_id": 1, "ann_id": 11, "image_id": 1, "split": "train", "category_id": 3, "file_name": "COCO_1_11.jpg",
     "sent_ids": [0, 1], "sentences": [{"tokens": ["the", "left", "man"], "raw": "The left man", "sent_id": 0,
                                        "sent": "the left man"}, {"sent": "guy on left", "sent_id": 1}]},
    {"ref_id": 2, "ann_id": 12, "image_id": 1, "split": "testA", "sentences": [{"sent": "right"}],
     "box": (1.5, 2.0, 30.0, 40.0), "tags": {"person", "man"}},
]


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_real_format_refs_file_loads(tmp_path, protocol):
    # Protocols 0 and 2 are what Python 2's cPickle wrote RefCOCO's files with (sets come as __builtin__.set).
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(REFS, protocol=protocol))
    assert refcoco_refs(path) == REFS


def test_a_crafted_refs_file_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = crafted(tmp_path / "refs(unc).p", marker, wrap=lambda payload: [{"ref_id": 1, "sentences": payload}])
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\)\.p: refused the global (posix|nt)\.system"):
        refcoco_refs(path)
    # the converter reads it the same way, before anything else
    with pytest.raises(UnsafePickleError, match="Nothing it names was run"):
        load_recipe("convert_refcoco").main(["--refs", str(path), "--instances", str(tmp_path / "missing.json"),
                                             "--images", str(tmp_path), "--output_dir", str(tmp_path / "out")])
    # any object reconstruction (not only os.system) is refused; so are truncated files and persistent ids
    with pytest.raises(UnsafePickleError, match=r"refused the global (copy_reg|copyreg)\._reconstructor"):
        (tmp_path / "obj.p").write_bytes(b"ccopy_reg\n_reconstructor\n(c__builtin__\nobject\nNtR.")
        load_builtin_pickle(tmp_path / "obj.p")
    (tmp_path / "short.p").write_bytes(pickle.dumps(REFS)[:40])
    with pytest.raises(ValueError, match=r"short\.p: not a readable pickle"):
        load_builtin_pickle(tmp_path / "short.p")
    assert not marker.exists()
    with open(path, "rb") as handle:  # the control: plain pickle.load does run what the file asks for
        pickle.load(handle)
    assert marker.exists()


# What a refs file may build, and nothing more: each type builds only data, whatever its arguments.
CONTAINERS_AND_SCALARS = {"set", "frozenset", "list", "dict", "tuple", "str", "bytes", "bytearray", "int", "float",
                          "complex", "bool"}


def test_the_unpickler_allows_builtin_containers_and_scalars_only(tmp_path):
    """Every other builtin is refused, by either name the pickle may use for the module: `eval`, `exec`, `getattr`,
    `__import__`, `open`, `compile`, `type`, `object`, `super`, `vars`, `globals`, ... each run code or reach objects
    that do."""
    import builtins

    path = tmp_path / "global.p"
    for module in ("builtins", "__builtin__"):
        for name in dir(builtins):
            path.write_bytes(f"c{module}\n{name}\n.".encode())
            if name in CONTAINERS_AND_SCALARS:
                assert load_builtin_pickle(path) is getattr(builtins, name), name
            else:
                with pytest.raises(UnsafePickleError, match=rf"refused the global {module}\.{name}\b"):
                    load_builtin_pickle(path)


@pytest.mark.parametrize("name,payload", [
    ("eval", "c__builtin__\neval\n(V__import__('os').system('touch {marker}')\ntR."),
    ("exec", "c__builtin__\nexec\n(Vimport os; os.system('touch {marker}')\ntR."),
    ("getattr", "c__builtin__\ngetattr\n(c__builtin__\n__import__\n(Vos\ntRVsystem\ntR(Vtouch {marker}\ntR."),
], ids=["eval", "exec", "getattr"])
def test_code_reached_through_builtins_is_refused(tmp_path, name, payload):
    """Payloads that stay inside `builtins` (eval / exec a string, getattr to reach os.system) are refused too."""
    marker = tmp_path / "ran"
    path = tmp_path / "refs(unc).p"
    path.write_bytes(payload.format(marker=marker).encode())
    with pytest.raises(UnsafePickleError, match=rf"refused the global __builtin__\.{name}\b"):
        refcoco_refs(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the control: plain pickle runs it
    assert marker.exists()


def malicious_weights(folder: Path, marker: Path, name: str = "pytorch_model.bin") -> Path:
    """`folder` with its safetensors weights replaced by a pickled `name` that would run code."""
    for weights in folder.glob("*.safetensors*"):
        weights.unlink()
    return crafted(folder / name, marker)


@pytest.mark.parametrize("model_class", [VersaViTModel, VersaViTForDepthEstimation, VersaViTForMultiTask, "auto"])
def test_versavit_folders_load_safetensors_only(tmp_path, model_class):
    folder, marker = tmp_path / "model", tmp_path / "ran"
    VersaViTForDepthEstimation(tiny_config()).save_pretrained(folder)
    malicious_weights(folder, marker)
    if model_class == "auto":
        from transformers import AutoModel

        model_class = AutoModel
    with pytest.raises(OSError, match=r"holds pickled weights only \(pytorch_model\.bin\); VersaViT loads safetensors"):
        model_class.from_pretrained(folder)
    assert not marker.exists()
    # a folder of trusted pickled weights still loads when the user says so (through torch's weights_only reader)
    weights = VersaViTModel(tiny_config()).state_dict()
    torch.save(weights, folder / "pytorch_model.bin")
    loaded = VersaViTModel.from_pretrained(folder, use_safetensors=False)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in weights.items())


def test_the_captioning_llm_is_read_without_unpickling_code(tmp_path, tiny_llm):
    from versavit_trainer.core.models import build_model
    from versavit_trainer.core.options import ModelArguments

    folder, marker = tmp_path / "llm", tmp_path / "ran"
    shutil.copytree(tiny_llm, folder)
    malicious_weights(folder, marker)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        build_model(ModelArguments(vision_config=dict(QWEN2_VISION), head_config=dict(TINY_HEADS),
                                   language_model=str(folder)), ["captioning"])
    assert not marker.exists()


def test_the_text_encoder_is_read_without_unpickling_code(tmp_path):
    from modeling_versavit import SentenceEmbedder
    from versavit_trainer.data.assets import minilm_path

    folder, marker = tmp_path / "text", tmp_path / "ran"
    shutil.copytree(minilm_path(), folder)
    malicious_weights(folder, marker)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        SentenceEmbedder(folder)
    assert not marker.exists()


def test_the_labelling_models_are_read_without_unpickling_code(tmp_path, photos, tiny_depth_checkpoint,
                                                               tiny_sam_checkpoint):
    marker = tmp_path / "ran"
    depth, sam = tmp_path / "depth", tmp_path / "sam"
    for source, folder in ((tiny_depth_checkpoint, depth), (tiny_sam_checkpoint, sam)):
        shutil.copytree(source, folder)
        malicious_weights(folder, marker)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_recipe("label_depth").main(["--model", str(depth), "--images", str(photos),
                                         "--output_dir", str(tmp_path / "labels")])
    boxes = tmp_path / "boxes.jsonl"
    boxes.write_text(json.dumps({"image": "astronaut.png", "objects": [{"box": [0, 0, 10, 10], "text": "a"}]}) + "\n")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_recipe("label_masks").main(["--sam", str(sam), "--annotations", str(boxes), "--images", str(photos),
                                         "--output_dir", str(tmp_path / "masks")])
    assert not marker.exists()


def test_a_resumed_trainer_checkpoint_is_read_without_unpickling_code(tmp_path):
    """A Trainer checkpoint's optimizer, scheduler and RNG state are torch pickles: transformers reads them with
    torch.load(weights_only=True), which refuses globals such as os.system."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(root / "tests" / "run_multitask.py"), str(out), "--max_steps", "1",
                    "--save_steps", "1"], check=True, cwd=root, env=env, capture_output=True, timeout=600)
    checkpoint = out / "run" / "checkpoint-1"
    marker = tmp_path / "ran"
    for name in ("rng_state.pth", "optimizer.pt"):
        assert (checkpoint / name).is_file(), name
        crafted(checkpoint / name, marker)
    result = subprocess.run([sys.executable, str(root / "tests" / "run_multitask.py"), str(out), "--max_steps", "2",
                             "--resume", str(checkpoint)], cwd=root, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode != 0 and "Weights only load failed" in result.stderr, result.stderr[-2000:]
    assert not marker.exists()
