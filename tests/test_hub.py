"""Hub export: the exact upload folder, its model card, remote code and offline-cache loading, and the upload's
commit operations (captured, no network)."""

import json
from pathlib import Path

import pytest
import torch
from conftest import VISION_CONFIGS, load_recipe, random_inputs, tiny_config
from hub_fixtures import WITHOUT_PACKAGE, hub_cache_with, run_python
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
from safetensors.torch import save_file

from modeling_versavit import (
    VersaViTForDepthEstimation,
    VersaViTForMultiTask,
    VersaViTForReferringSegmentation,
    VersaViTModel,
)
from versavit_trainer.export.hub import export_folder, push_to_hub

RESULTS = [
    {"task_type": "depth-estimation", "dataset_type": "nyu_depth_v2", "dataset_name": "NYUv2", "metric_type": "rmse",
     "metric_value": 0.321, "metric_name": "RMSE (linear probe)"},
    {"task_type": "image-segmentation", "dataset_type": "scene_parse_150", "dataset_name": "ADE20k",
     "metric_type": "mean_iou", "metric_value": 42.3},
]


def test_exported_folder_and_its_card(tmp_path):
    torch.manual_seed(0)
    model = VersaViTModel(tiny_config("qwen2_vl"))
    folder = export_folder(model, tmp_path / "export", "org/versavit", base_model="Qwen/Qwen2-VL-7B-Instruct",
                           datasets=["org/scenes"], results=RESULTS)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md",
            "configuration_versavit.py", "modeling_versavit.py", "image_processing_versavit.py"} <= names
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_versavit.VersaViTModel"

    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "image-feature-extraction"
    assert card.data.base_model == "Qwen/Qwen2-VL-7B-Instruct"
    assert card.data.datasets == ["org/scenes"] and card.data.license == "apache-2.0"
    assert [(r.dataset_name, r.metric_value) for r in card.data.eval_results] == [("NYUv2", 0.321), ("ADE20k", 42.3)]
    assert "model-index" in (folder / "README.md").read_text()
    for snippet in ('AutoModel.from_pretrained("org/versavit", trust_remote_code=True)', "swap_vision_tower.py",
                    "accelerate launch", "| depth-estimation | NYUv2 | RMSE (linear probe) | 0.321 |"):
        assert snippet in card.text, snippet


@pytest.mark.parametrize(
    ("model_class", "pipeline_tag", "auto_class"),
    [
        (VersaViTForDepthEstimation, "depth-estimation", "AutoModelForDepthEstimation"),
        (VersaViTForReferringSegmentation, "image-segmentation", "AutoModel"),
    ],
)
def test_task_models_export_with_their_pipeline_tag(tmp_path, model_class, pipeline_tag, auto_class):
    model = model_class(tiny_config("qwen2_5_vl"))
    folder = export_folder(model, tmp_path, "org/versavit-task")
    card = ModelCard.load(folder / "README.md")
    assert card.data.pipeline_tag == pipeline_tag and card.data.eval_results is None
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"][auto_class] == f"modeling_versavit.{model_class.__name__}"


def test_bad_results_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"results\[0\]: missing \['metric_value'\]"):
        export_folder(VersaViTModel(tiny_config()), tmp_path, "org/x",
                      results=[{k: v for k, v in RESULTS[0].items() if k != "metric_value"}])
    with pytest.raises(ValueError, match="expected a VersaViT model, got Linear"):
        export_folder(torch.nn.Linear(2, 2), tmp_path / "y", "org/x")


# Qwen2-VL's export in make test; the other families' (the same check, their own files) in CI's e2e run
@pytest.fixture(scope="module", params=[pytest.param(family, marks=() if family == "qwen2_vl" else pytest.mark.e2e)
                                        for family in sorted(VISION_CONFIGS)])
def exported(tmp_path_factory, request):
    """An exported segmentation model (not a class any Auto mapping knows) of each tower family, with reference
    outputs."""
    folder = tmp_path_factory.mktemp(f"export-{request.param}")
    torch.manual_seed(0)
    model = VersaViTForReferringSegmentation(tiny_config(request.param)).eval()
    export_folder(model, folder, "org/versavit-refseg")
    inputs = random_inputs(model.config, [(4, 4)], seed=1)
    text = torch.randn(2, model.config.text_embed_dim)
    index = torch.tensor([0, 0])
    with torch.no_grad():
        masks = model(**inputs, text_embeds=text, expression_image_index=index).pred_masks
    reference = folder.parent / f"{folder.name}-reference.safetensors"
    save_file({**inputs, "text_embeds": text, "index": index, "masks": masks}, reference)
    return folder, reference


CHECK_SEGMENTATION = """
import torch
from safetensors.torch import load_file
from transformers import AutoModel
expected = load_file({reference!r})
model = AutoModel.from_pretrained({source!r}, trust_remote_code=True).eval()
with torch.no_grad():
    out = model(expected["pixel_values"], expected["image_grid_thw"], text_embeds=expected["text_embeds"],
                expression_image_index=expected["index"])
assert torch.equal(out.pred_masks, expected["masks"])
print(type(model).__module__, type(model).__name__)
"""


@pytest.mark.parametrize("source", ["folder", "hub-cache"])
def test_export_loads_without_the_package(tmp_path, exported, source):
    folder, reference = exported
    if source == "hub-cache" and "qwen2_vl" not in folder.name:
        pytest.skip("the Hub-cache layout is checked once (Qwen2-VL); the families differ in their files only")
    assert {"backbones.py", "backbone_base.py", "backbone_qwen2_vl.py", "backbone_qwen3_vl.py", "backbone_siglip2.py",
            "backbone_siglip.py"} <= {
        p.name for p in folder.iterdir()}  # the tower families' files travel as remote code
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HOME": str(tmp_path / "home")}
    where = str(folder)
    if source == "hub-cache":
        hub_cache_with(folder, tmp_path / "hub", "org/versavit-refseg")
        env["HF_HUB_CACHE"] = str(tmp_path / "hub")
        where = "org/versavit-refseg"
    out = run_python(WITHOUT_PACKAGE + CHECK_SEGMENTATION.format(reference=str(reference), source=where), tmp_path, env)
    module, name = out.split()
    assert module.startswith("transformers_modules.") and name == "VersaViTForReferringSegmentation"


def test_push_sends_the_exported_files_in_one_commit(tmp_path, monkeypatch):
    created, commits = [], []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: created.append((repo_id, kwargs)))

    def create_commit(self, repo_id, operations, commit_message, **kwargs):  # what would go to the Hub
        files = {}
        for operation in operations:
            assert isinstance(operation, CommitOperationAdd)
            with operation.as_file() as handle:
                files[operation.path_in_repo] = handle.read()
        commits.append({"repo_id": repo_id, "message": commit_message, "files": files})
        return "commit-info"

    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    torch.manual_seed(0)
    model = VersaViTModel(tiny_config())
    assert push_to_hub(model, "org/versavit", private=True, token="hf_test", results=RESULTS[:1]) == "commit-info"
    assert created == [("org/versavit", {"private": True, "exist_ok": True})]
    (commit,) = commits
    local = export_folder(model, tmp_path / "local", "org/versavit", results=RESULTS[:1])
    assert commit["repo_id"] == "org/versavit"
    assert set(commit["files"]) == {p.name for p in local.iterdir()}
    for name, data in commit["files"].items():
        assert data == (local / name).read_bytes(), name


@pytest.fixture(scope="module")
def multitask_checkpoint(tmp_path_factory):
    """A saved multi-task checkpoint (backbone, depth and segmentation heads; no LLM)."""
    folder = tmp_path_factory.mktemp("final")
    torch.manual_seed(0)
    VersaViTForMultiTask(tiny_config("qwen2_vl")).save_pretrained(folder)
    return folder


def test_recipe_exports_each_task_to_its_folder(tmp_path, multitask_checkpoint):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(RESULTS))
    published = load_recipe("push_to_hub").main([
        "--model", str(multitask_checkpoint), "--repo_id", "org/versavit", "--tasks", "backbone", "depth",
        "segmentation", "--local_dir", str(tmp_path / "out"), "--results", str(results),
    ])
    assert set(published) == {"backbone", "depth", "segmentation"}
    source = VersaViTForMultiTask.from_pretrained(multitask_checkpoint)
    classes = {"backbone": VersaViTModel, "depth": VersaViTForDepthEstimation,
               "segmentation": VersaViTForReferringSegmentation}
    for task, model_class in classes.items():
        model = model_class.from_pretrained(published[task])
        for name, value in model.state_dict().items():
            assert torch.equal(value, source.state_dict()[name]), (task, name)
        card = ModelCard.load(tmp_path / "out" / task / "README.md")
        assert card.data.model_name == ("org/versavit" if task == "backbone" else f"org/versavit-{task}")
        assert len(card.data.eval_results) == 2


def test_the_card_shows_one_pipeline_line_per_task_the_model_serves(tmp_path, caplog):
    """A multi-task model serves features, depth, referring segmentation; a backbone features only. The sentence
    encoder the texts are embedded with is named, and a local folder recorded there is flagged before an upload
    (`--text_encoder` records the Hub id instead)."""
    torch.manual_seed(0)
    local = str(tmp_path / "minilm")
    model = VersaViTForMultiTask(tiny_config("qwen2_vl", text_encoder=local))
    with caplog.at_level("WARNING", logger="versavit_trainer.export.hub"):
        card = (export_folder(model, tmp_path / "multitask", "org/versavit") / "README.md").read_text()
    assert f"config.text_encoder is the local folder {local}" in caplog.text
    lines = [line for line in card.splitlines() if "= pipeline(" in line]
    assert [line.split('pipeline("')[1].split('"')[0] for line in lines] == [
        "image-feature-extraction", "depth-estimation", "referring-segmentation"]
    assert all('model="org/versavit", trust_remote_code=True)' in line for line in lines)
    assert f"embedded inside the pipeline with `{local}`" in card
    caplog.clear()
    hub_id = "sentence-transformers/all-MiniLM-L6-v2"
    with caplog.at_level("WARNING", logger="versavit_trainer.export.hub"):
        folder = export_folder(model, tmp_path / "hub", "org/versavit", text_encoder=hub_id)
    assert "local folder" not in caplog.text
    assert json.loads((folder / "config.json").read_text())["text_encoder"] == hub_id
    assert f"embedded inside the pipeline with `{hub_id}`" in (folder / "README.md").read_text()
    backbone = (export_folder(VersaViTModel(tiny_config()), tmp_path / "backbone", "org/b") / "README.md").read_text()
    assert [line.split('pipeline("')[1].split('"')[0] for line in backbone.splitlines() if "= pipeline(" in line] == [
        "image-feature-extraction"]


def test_recipe_records_the_text_encoder_s_hub_id(tmp_path, multitask_checkpoint):
    published = load_recipe("push_to_hub").main([
        "--model", str(multitask_checkpoint), "--repo_id", "org/versavit", "--tasks", "segmentation",
        "--local_dir", str(tmp_path / "out"), "--text_encoder", "sentence-transformers/all-MiniLM-L6-v2"])
    config = json.loads((Path(published["segmentation"]) / "config.json").read_text())
    assert config["text_encoder"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert sorted(config["custom_pipelines"]) == ["referring-segmentation"]


def test_recipe_refuses_a_task_the_checkpoint_lacks(tmp_path):
    torch.manual_seed(0)
    VersaViTModel(tiny_config()).save_pretrained(tmp_path / "backbone")
    with pytest.raises(SystemExit, match="has no depth weights"):
        load_recipe("push_to_hub").main(
            [
                "--model",
                str(tmp_path / "backbone"),
                "--repo_id",
                "org/x",
                "--tasks",
                "depth",
                "--local_dir",
                str(tmp_path / "out"),
            ]
        )
    assert not (tmp_path / "out").exists()


def test_recipe_uploads_through_create_commit(tmp_path, monkeypatch, multitask_checkpoint):
    sent = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: None)
    monkeypatch.setattr(
        HfApi,
        "create_commit",
        lambda self, repo_id, operations, **kwargs: sent.append((repo_id, [o.path_in_repo for o in operations])),
    )
    load_recipe("push_to_hub").main(["--model", str(multitask_checkpoint), "--repo_id", "org/versavit", "--tasks",
                                     "depth"])
    ((repo_id, paths),) = sent
    assert repo_id == "org/versavit" and {"README.md", "model.safetensors", "config.json"} <= set(paths)
