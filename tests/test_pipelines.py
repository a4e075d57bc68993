"""transformers pipelines on every kind of exported folder: no remote-code question with the package installed,
remote code with `trust_remote_code=True` without it, transformers' refusal otherwise, and results equal to the
model called by hand."""

import hashlib
import json

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from conftest import load_recipe, photo, tiny_config, tiny_run_config
from hub_fixtures import WITHOUT_PACKAGE, run_python
from transformers import AutoTokenizer, BertConfig, BertModel, pipeline

from modeling_versavit import (
    SentenceEmbedder,
    VersaViTCaptioningProcessor,
    VersaViTForCaptioning,
    VersaViTForDepthEstimation,
    VersaViTForImageTextRetrieval,
    VersaViTForReferringSegmentation,
    VersaViTImageProcessor,
    VersaViTModel,
    fixed_size_pixels,
)
from versavit_trainer.data.assets import minilm_path
from versavit_trainer.export.hub import export_folder

EXPRESSIONS = ["the red sphere", "the cube on the left"]
LABELS = ["a red sphere", "an astronaut", "a blue cube"]
PROMPT = "What is in the image?"
SIZE = 56  # the run's segmentation_size


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_llm):
    """A tiny multi-task run's `final/` and `backbone/`, the task folders `push_to_hub.py` exports from it, a
    retrieval model's export, and the image the pipelines read."""
    root = tmp_path_factory.mktemp("pipelines")
    summary = load_recipe("multitask").main(["--config", str(tiny_run_config(
        root, tiny_llm, max_steps=2, save_strategy="no", report_to="none", num_eval_scenes=2, panel_samples=2,
    ))])
    final = root / "run" / "final"
    found = {"final": final, "backbone": root / "run" / "backbone"}
    for name, cls in (("depth", VersaViTForDepthEstimation), ("segmentation", VersaViTForReferringSegmentation),
                      ("captioning", VersaViTForCaptioning)):
        model = cls.from_pretrained(final)
        tokenizer = AutoTokenizer.from_pretrained(final) if name == "captioning" else None
        found[name] = export_folder(model, root / name, "org/versavit-" + name, tokenizer=tokenizer,
                                    image_processor=VersaViTImageProcessor.from_pretrained(final))
    torch.manual_seed(0)
    retrieval = VersaViTForImageTextRetrieval(tiny_config("qwen2_vl", text_embed_dim=384, retrieval_embed_dim=16,
                                                          retrieval_pooling_heads=4, text_encoder=str(minilm_path())))
    found["retrieval"] = export_folder(retrieval, root / "retrieval", "org/versavit-retrieval")
    image = root / "image.png"
    PIL.Image.fromarray(photo("astronaut")).resize((100, 84)).save(image)
    return found, image, summary


def test_a_run_records_its_text_encoder_and_the_folders_map_what_they_serve(folders):
    found, _, _ = folders
    config = json.loads((found["final"] / "config.json").read_text())
    assert config["text_encoder"] == str(minilm_path())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_versavit.VersaViTConfig",
        "AutoModel": "modeling_versavit.VersaViTForMultiTask",
        "AutoModelForDepthEstimation": "modeling_versavit.VersaViTForDepthEstimation",
        "AutoImageProcessor": "image_processing_versavit.VersaViTImageProcessor",
    }
    assert sorted(config["custom_pipelines"]) == ["referring-segmentation", "versavit-captioning"]
    assert config["custom_pipelines"]["referring-segmentation"] == {
        "impl": "pipelines_versavit.VersaViTReferringSegmentationPipeline", "pt": ["AutoModel"], "type": "multimodal"}
    backbone = json.loads((found["backbone"] / "config.json").read_text())
    assert "AutoModelForDepthEstimation" not in backbone["auto_map"] and "custom_pipelines" not in backbone
    pipelines = {name: sorted(json.loads((found[name] / "config.json").read_text()).get("custom_pipelines", {}))
                 for name in ("depth", "segmentation", "captioning", "retrieval")}
    assert pipelines == {"depth": [], "segmentation": ["referring-segmentation"],
                         "captioning": ["versavit-captioning"],
                         "retrieval": ["versavit-zero-shot-image-classification"]}
    for name, folder in found.items():
        processor = json.loads((folder / "preprocessor_config.json").read_text())
        # either key would make transformers' video-processor lookup ask about remote code in every pipeline
        assert "auto_map" not in processor and "image_processor_type" not in processor, name
        assert (folder / "pipelines_versavit.py").is_file() and (folder / "text_embedding_versavit.py").is_file()


def _by_hand(found, image_path) -> dict:
    """What each pipeline must return, from the task models called directly: the formulas written out here."""
    image = PIL.Image.open(image_path).convert("RGB")
    embedder = SentenceEmbedder(minilm_path())
    expected = {}
    with torch.no_grad():
        for name in ("final", "depth"):
            model = VersaViTForDepthEstimation.from_pretrained(found[name]).eval()
            inputs = VersaViTImageProcessor.from_pretrained(found[name])(images=[image], return_tensors="pt")
            depth = model(**inputs).predicted_depth
            expected[f"depth-estimation/{name}"] = F.interpolate(depth[None], size=(image.height, image.width),
                                                                 mode="bicubic", align_corners=False)[0, 0]
        for name in ("final", "backbone"):
            model = VersaViTModel.from_pretrained(found[name]).eval()
            inputs = VersaViTImageProcessor.from_pretrained(found[name])(images=[image], return_tensors="pt")
            expected[f"image-feature-extraction/{name}"] = model(**inputs).last_hidden_state
        for name in ("final", "segmentation"):
            model = VersaViTForReferringSegmentation.from_pretrained(found[name]).eval()
            pixels = fixed_size_pixels([image], SIZE, VersaViTImageProcessor.from_pretrained(found[name]))
            logits = model(**pixels, text_embeds=embedder(EXPRESSIONS),
                           expression_image_index=torch.zeros(2, dtype=torch.long)).pred_masks
            resized = F.interpolate(logits[:, None], size=(image.height, image.width), mode="bilinear",
                                    align_corners=False)[:, 0]
            expected[f"referring-segmentation/{name}"] = resized > 0
        for name in ("final", "captioning"):
            model = VersaViTForCaptioning.from_pretrained(found[name]).eval()
            processor = VersaViTCaptioningProcessor.from_pretrained(found[name])
            tokens = model.generate(**processor([image], prompts=[PROMPT]), max_new_tokens=6, do_sample=False)
            expected[f"versavit-captioning/{name}"] = processor.batch_decode(tokens)[0].strip()
        model = VersaViTForImageTextRetrieval.from_pretrained(found["retrieval"]).eval()
        inputs = VersaViTImageProcessor.from_pretrained(found["retrieval"])(images=[image], return_tensors="pt")
        image_embeds = model.get_image_features(**inputs).pooler_output
        text_embeds = model.project_text(embedder(LABELS))
        head = model.retrieval_head
        logits = head.logit_scale.exp() * image_embeds @ text_embeds.T + head.logit_bias  # SigLIP's pair logits
        expected["versavit-zero-shot-image-classification/retrieval"] = dict(zip(LABELS, logits[0].sigmoid().tolist()))
    return expected


# Runs every pipeline on every folder that serves its task, with `input` recorded, and saves what they return.
RUN_PIPELINES = """
import builtins, json, sys
import numpy as np
import torch
asked = []
builtins.input = lambda prompt="": asked.append(prompt) or "n"
from transformers import pipeline
found, image, out, kwargs, expressions, size, prompt, labels = json.loads(sys.argv[1])
results, classes = {}, {}
def run(task, name, *args, **call):
    pipe = pipeline(task, model=found[name], **kwargs)
    classes[f"{task}/{name}"] = type(pipe.model).__module__ + "." + type(pipe.model).__name__
    return pipe(image, *args, **call)
for name in ("final", "depth"):
    results[f"depth-estimation/{name}"] = run("depth-estimation", name)["predicted_depth"]
for name in ("final", "backbone"):
    results[f"image-feature-extraction/{name}"] = torch.tensor(run("image-feature-extraction", name))
for name in ("final", "segmentation"):
    masks = run("referring-segmentation", name, expressions, size=size)
    stacked = np.stack([np.array(m["mask"]) > 0 for m in masks])
    results[f"referring-segmentation/{name}"] = torch.from_numpy(stacked)
    results[f"referring-segmentation/{name}/expressions"] = [m["expression"] for m in masks]
for name in ("final", "captioning"):
    results[f"versavit-captioning/{name}"] = run("versavit-captioning", name, prompt, max_new_tokens=6)
ranked = run("versavit-zero-shot-image-classification", "retrieval", candidate_labels=labels)
results["versavit-zero-shot-image-classification/retrieval"] = ranked
torch.save({"results": results, "classes": classes, "asked": asked}, out)
"""


def _run_pipelines(tmp_path, folders, installed: bool) -> dict:
    found, image, _ = folders
    out = tmp_path / "results.pt"
    prelude = "import modeling_versavit\n" if installed else WITHOUT_PACKAGE
    kwargs = {} if installed else {"trust_remote_code": True}
    argv = json.dumps([{k: str(v) for k, v in found.items()}, str(image), str(out), kwargs, EXPRESSIONS, SIZE, PROMPT,
                       LABELS])
    code = prelude + RUN_PIPELINES.replace("json.loads(sys.argv[1])", f"json.loads({argv!r})")
    run_python(code, tmp_path, {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"})
    return torch.load(out, weights_only=False)


def _check_results(ran: dict, expected: dict) -> None:
    results = ran["results"]
    assert ran["asked"] == []
    for key, value in expected.items():
        got = results[key]
        if key.startswith("versavit-zero-shot"):
            assert [r["label"] for r in got] == sorted(LABELS, key=lambda label: -value[label])
            assert {r["label"]: r["score"] for r in got} == pytest.approx(value, abs=1e-6)
        elif key.startswith("versavit-captioning"):
            assert got == [{"generated_text": value}], key
        elif key.startswith("referring-segmentation"):
            assert torch.equal(got, value), key
            assert results[key + "/expressions"] == EXPRESSIONS
        else:
            torch.testing.assert_close(got.reshape(value.shape), value, rtol=1e-5, atol=1e-5, msg=key)


@pytest.mark.parametrize("installed", [True, False], ids=["package-installed", "remote-code"])
def test_every_pipeline_loads_every_folder_without_a_question_and_equals_the_model(tmp_path, folders, installed):
    ran = _run_pipelines(tmp_path, folders, installed)
    _check_results(ran, _by_hand(folders[0], folders[1]))
    classes = ran["classes"]
    if installed:  # the registered local classes, the task model of each pipeline's head
        assert classes["referring-segmentation/final"] == \
            "modeling_versavit.modeling_versavit.VersaViTForReferringSegmentation"
        assert classes["depth-estimation/final"] == "modeling_versavit.modeling_versavit.VersaViTForDepthEstimation"
        assert all(name.startswith("modeling_versavit.") for name in classes.values())
    else:  # the folder's own code, its AutoModel class for the VersaViT pipelines
        assert all(name.startswith("transformers_modules.") for name in classes.values())
        assert classes["referring-segmentation/final"].endswith(".VersaViTForMultiTask")
        assert classes["referring-segmentation/segmentation"].endswith(".VersaViTForReferringSegmentation")


REFUSED = """
import json, sys
from transformers import pipeline
refusals = {}
for task, folder in json.loads(sys.argv[1]):
    try:
        pipeline(task, model=folder)
    except ValueError as err:
        refusals[task] = str(err)
print()  # after transformers' unanswered question
print("REFUSALS " + json.dumps(refusals))
"""


def test_without_the_package_and_without_trust_remote_code_transformers_refuses(tmp_path, folders):
    found, _, _ = folders
    tasks = [("depth-estimation", str(found["depth"])), ("image-feature-extraction", str(found["backbone"])),
             ("referring-segmentation", str(found["final"])), ("versavit-captioning", str(found["captioning"]))]
    code = WITHOUT_PACKAGE + REFUSED.replace("json.loads(sys.argv[1])", f"json.loads({json.dumps(tasks)!r})")
    # stdin is not a terminal: transformers' question cannot be answered, so it refuses
    out = run_python(code, tmp_path, {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"})
    refusals = json.loads(out.split("REFUSALS ")[-1])
    assert sorted(refusals) == sorted(task for task, _ in tasks)
    assert all("trust_remote_code=True" in message for message in refusals.values()), refusals


def test_the_referring_pipeline_reproduces_the_masks_of_the_prediction_panel(folders):
    """predictions.png's mask column (recorded in summary.json's panel) equals the pipeline's masks on final/ for
    the same held-out scenes and first expressions, at the run's segmentation size."""
    from versavit_trainer.core.options import DataArguments
    from versavit_trainer.core.sources import DataSources

    found, _, summary = folders
    held_out = DataSources(DataArguments(num_eval_scenes=2, scene_seed=0), ["segmentation"]).held_out("segmentation")
    segment = pipeline("referring-segmentation", model=str(found["final"]), size=SIZE)  # kept for every call
    assert len(summary["panel"]) == 2
    for row, drawn in zip(held_out, summary["panel"]):
        assert drawn["expression"] == row["expressions"][0]
        (result,) = segment(row["image"], row["expressions"][:1])
        mask = np.array(result["mask"]) > 0
        assert [*mask.shape] == drawn["mask_size"] and int(mask.sum()) == drawn["mask_pixels"]
        assert hashlib.sha256(np.packbits(mask).tobytes()).hexdigest() == drawn["mask_sha256"]


def test_a_pipeline_refuses_a_folder_without_its_head_and_a_missing_or_mismatched_encoder(folders, tmp_path):
    found, image, _ = folders
    with pytest.raises(ValueError, match="holds no trained VersaViTForReferringSegmentation head"):
        pipeline("referring-segmentation", model=str(found["backbone"]))
    with pytest.raises(ValueError, match=r"text_encoder '/nowhere/encoder' does not load here .*pass a local copy"):
        pipeline("referring-segmentation", model=str(found["segmentation"]), text_encoder="/nowhere/encoder")
    config = json.loads((found["segmentation"] / "config.json").read_text())
    moved = tmp_path / "moved"
    moved.mkdir()
    for path in found["segmentation"].iterdir():
        (moved / path.name).write_bytes(path.read_bytes())
    (moved / "config.json").write_text(json.dumps({**config, "text_encoder": "/gone/minilm"}))
    with pytest.raises(ValueError, match=r"config.text_encoder '/gone/minilm' does not load here"):
        pipeline("referring-segmentation", model=str(moved))
    (moved / "config.json").write_text(json.dumps({**config, "text_encoder": None}))
    with pytest.raises(ValueError, match=r"records no text encoder .*text_encoder='path/to/encoder'"):
        pipeline("referring-segmentation", model=str(moved))
    narrow = tmp_path / "narrow_encoder"  # a 32-d sentence encoder where the head reads MiniLM's 384-d embeddings
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=30522)).save_pretrained(narrow)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(narrow)
    with pytest.raises(ValueError, match=r"gives 32-d embeddings, the model reads 384-d \(config.text_embed_dim\)"):
        pipeline("referring-segmentation", model=str(found["segmentation"]), text_encoder=str(narrow))
    segment = pipeline("referring-segmentation", model=str(found["segmentation"]))
    with pytest.raises(ValueError, match=r"size: the height must be a positive multiple of 28 .*got 50"):
        segment(str(image), EXPRESSIONS, size=50)
    with pytest.raises(ValueError, match=r"expressions\[1\]: expected a non-empty string, got ' '"):
        segment(str(image), ["the sphere", " "])


def test_the_installed_package_serves_a_folder_that_names_its_pipelines_without_trust_remote_code(folders):
    """A config loaded with the package drops the `custom_pipelines` the package registers itself (transformers
    would demand trust_remote_code=True for them), and keeps any other."""
    from modeling_versavit import VersaViTConfig

    found, _, _ = folders
    config = VersaViTConfig.from_pretrained(found["final"])
    assert getattr(config, "custom_pipelines", None) is None
    other = {"impl": "elsewhere.OtherPipeline", "pt": ["AutoModel"]}
    ours = {"impl": "pipelines_versavit.VersaViTCaptioningPipeline"}
    kept = VersaViTConfig(custom_pipelines={"referring-segmentation": other, "versavit-captioning": ours})
    assert kept.custom_pipelines == {"referring-segmentation": other}
