"""Graph export (recipes/export/export_graph.py, versavit_trainer.export.graph): ONNX that runs in onnxruntime and
`torch.export` programs, traced at one image size and equal to eager at another."""

import json

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import VISION_CONFIGS, load_recipe, tiny_config

from modeling_versavit import VersaViTForDepthEstimation, VersaViTForReferringSegmentation, VersaViTModel
from versavit_trainer.export.graph import compare_outputs, export_graph, sample_inputs


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory):
    """A depth model's folder: its backbone loads as `backbone`, the whole as `depth`."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("depth_model")
    VersaViTForDepthEstimation(tiny_config("qwen2_vl")).save_pretrained(folder)
    return folder


def test_onnx_backbone_runs_in_onnxruntime_and_matches_eager(tmp_path, trained_folder):
    report = load_recipe("export_graph").main(
        ["--model", str(trained_folder), "--task", "backbone", "--format", "onnx", "--size", "112",
         "--check_size", "84", "--output_dir", str(tmp_path)]
    )
    assert "model.onnx" in report["files"] and json.loads((tmp_path / "export_check.json").read_text()) == report
    assert max(report["max_abs_difference"].values()) < 1e-4
    # The file alone, in a plain onnxruntime session, at a third size (dynamic): the eager backbone's outputs.
    model = VersaViTModel.from_pretrained(trained_folder).eval()
    inputs = sample_inputs(model, (56, 140), seed=3)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, feeds)))
    with torch.no_grad():
        eager = model(**inputs)
    np.testing.assert_allclose(outputs["last_hidden_state"], eager.last_hidden_state.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs["pooler_output"], eager.pooler_output.numpy(), rtol=1e-4, atol=1e-5)


def test_torch_export_of_the_depth_model_reloads_and_matches_eager(tmp_path, trained_folder):
    report = load_recipe("export_graph").main(
        ["--model", str(trained_folder), "--task", "depth", "--format", "dynamo", "--size", "112",
         "--check_size", "168", "--num_images", "2", "--output_dir", str(tmp_path)]
    )
    assert "model.pt2" in report["files"] and report["max_abs_difference"]["predicted_depth"] < 1e-4
    program = torch.export.load(str(tmp_path / "model.pt2"))
    model = VersaViTForDepthEstimation.from_pretrained(trained_folder).eval()
    inputs = sample_inputs(model, (84, 140), num_images=2, seed=4)
    with torch.no_grad():
        eager = model(**inputs).predicted_depth
    ours = program.module()(**inputs)
    predicted = ours["predicted_depth"] if isinstance(ours, dict) else ours.predicted_depth
    torch.testing.assert_close(predicted, eager, rtol=1e-4, atol=1e-5)


def test_the_referring_model_exports_with_its_text_embeddings():
    torch.manual_seed(0)
    model = VersaViTForReferringSegmentation(tiny_config("qwen2_vl")).eval()
    exported = export_graph(model, sample_inputs(model, (56, 56), num_images=2, num_expressions=2), format="dynamo")
    other = sample_inputs(model, (84, 56), num_images=2, num_expressions=2, seed=1)
    assert compare_outputs(exported, model, other)["pred_masks"] < 1e-4


def test_what_does_not_export_is_refused_by_name(tmp_path, trained_folder, monkeypatch):
    model = VersaViTModel(tiny_config("qwen2_5_vl")).eval()
    # every family exports today; one that could not would say why (`VisionBackbone.export_blocker`)
    monkeypatch.setattr(type(model.config.backbone), "export_blocker", "its windows are built in Python")
    with pytest.raises(ValueError, match="qwen2_5_vl tower does not export: its windows are built in Python"):
        export_graph(model, sample_inputs(model, (56, 56)))
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"size \(height\): must be a positive multiple of 28"):
        sample_inputs(model, (50, 56))
    recipe = load_recipe("export_graph")
    with pytest.raises(SystemExit, match="format 'tflite'"):
        recipe.main(["--model", str(trained_folder), "--format", "tflite", "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="has no segmentation weights"):
        recipe.main(["--model", str(trained_folder), "--task", "segmentation", "--output_dir", str(tmp_path)])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "model.onnx").write_text("an earlier export")  # refused before the export, kept
    with pytest.raises(SystemExit, match=r"busy is not empty \(model.onnx\); .* pass --overwrite true"):
        recipe.main(["--model", str(trained_folder), "--output_dir", str(tmp_path / "busy")])
    assert (tmp_path / "busy" / "model.onnx").read_text() == "an earlier export"


def round_trip(tmp_path, model, format: str, size: tuple[int, int], num_images: int) -> dict:
    """`model` exported in `format` at 2 images of 4x4 merge blocks, saved, then run as the deployment would run it
    (ONNX: the file alone in a plain onnxruntime session; dynamo: `torch.export.load` of the .pt2 program) on
    `num_images` images of `size`: the largest difference from eager per output."""
    block = model.config.input_size_multiple
    exported = export_graph(model, sample_inputs(model, (4 * block, 4 * block), num_images=2), format)
    exported.save_pretrained(tmp_path)
    inputs = sample_inputs(model, size, num_images=num_images, seed=5)
    with torch.no_grad():
        eager = model(**inputs)
    if format == "onnx":
        session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        ours = dict(zip(names, session.run(None, {i.name: inputs[i.name].numpy() for i in session.get_inputs()})))
    else:
        with torch.no_grad():
            out = torch.export.load(str(tmp_path / "model.pt2")).module()(**inputs)
        ours = {key: value.numpy() for key, value in (out.items() if isinstance(out, dict) else vars(out).items())
                if isinstance(value, torch.Tensor)}
    keys = [key for key in ("last_hidden_state", "pooler_output", "predicted_depth") if eager.get(key) is not None]
    return {key: float(np.abs(ours[key] - eager[key].numpy()).max()) for key in keys}


@pytest.mark.e2e  # (make test: transformers' common torch_export tests run every family at another size)
@pytest.mark.parametrize("format", ["onnx", "dynamo"])
def test_a_whole_image_tower_exports_for_any_size_and_number_of_images(tmp_path, format):
    """SigLIP (images folded back, its position grid resized in the graph): traced at 2 images of one size, equal
    to eager at another size, at the checkpoint's own size (the resize is then the identity) and for 1 or 3
    images."""
    torch.manual_seed(0)
    model = VersaViTModel(tiny_config("siglip")).eval()
    for index, (size, count) in enumerate([((64, 160), 1), ((64, 64), 3)]):
        differences = round_trip(tmp_path / str(index), model, format, size, count)
        assert set(differences) == {"last_hidden_state", "pooler_output"} and max(differences.values()) < 1e-5


@pytest.mark.e2e
@pytest.mark.parametrize("format", ["onnx", "dynamo"])
@pytest.mark.parametrize("family", sorted(VISION_CONFIGS))
def test_every_family_round_trips_at_another_size(tmp_path, family, format):
    """Every family (Qwen2.5-VL's windows then change in number and size): the backbone and the depth model, traced
    at one size, equal eager to 1e-5 at another (and, where the family allows it, at another number of images)."""
    torch.manual_seed(0)
    block = tiny_config(family).input_size_multiple
    count = 2 if tiny_config(family).backbone.export_fixed_image_count else 3
    for cls in (VersaViTModel, VersaViTForDepthEstimation):
        model = cls(tiny_config(family)).eval()
        differences = round_trip(tmp_path / cls.__name__, model, format, (2 * block, 6 * block), count)
        assert differences and max(differences.values()) < 1e-5, (cls.__name__, differences)


@pytest.mark.e2e
@pytest.mark.parametrize("format", ["onnx", "dynamo"])
def test_qwen2_5_vl_exports_with_windows_of_other_numbers_and_sizes(tmp_path, format):
    """Qwen2.5-VL: traced where every attention window is whole (8x8 merge units, windows of 4x4), equal to eager
    at a size whose windows differ in number and are cut by the image's edge (6x10 units); its window permutation
    under export is transformers' own (`get_vision_window_index`), checked on other grids below."""
    torch.manual_seed(0)
    model = VersaViTModel(tiny_config("qwen2_5_vl")).eval()
    differences = round_trip(tmp_path, model, format, (168, 280), 2)
    assert set(differences) == {"last_hidden_state", "pooler_output"} and max(differences.values()) < 1e-5


@pytest.mark.parametrize(("count", "height", "width"), [(1, 8, 8), (2, 16, 16), (2, 12, 20), (3, 18, 10), (1, 2, 2),
                                                        (2, 6, 30)])
def test_the_traced_window_index_is_transformers_own(count, height, width):
    from transformers.vision_utils import get_vision_window_index

    from modeling_versavit.backbone_qwen2_vl import shared_grid_windows

    grid = torch.tensor([[1, height, width]] * count)
    expected = get_vision_window_index(grid, 2, 112, 14)  # windows of 112 px: 4 x 4 merge units of 2 x 2 patches
    ours = shared_grid_windows(grid, 2, 4)
    assert torch.equal(ours[0], expected[0]) and torch.equal(ours[1], expected[1])
