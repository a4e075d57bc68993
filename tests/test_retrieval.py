"""The image-text retrieval model (supplement §9.5): attention pooling over images of any sizes, the text projection,
the contrastive loss and its learnable scale / bias, loading and bad input."""

import math

import pytest
import torch
from conftest import random_inputs, tiny_config

from modeling_versavit import (
    VersaViTConfig,
    VersaViTForImageTextRetrieval,
    VersaViTModel,
    contrastive_loss,
    fixed_size_pixels,
)
from versavit_trainer.data.processors import image_processor_for

GRIDS = [(4, 4), (6, 2), (2, 8)]


def retrieval_model(family="qwen2_vl", **kwargs) -> VersaViTForImageTextRetrieval:
    torch.manual_seed(0)
    config = tiny_config(family, retrieval_embed_dim=16, retrieval_pooling_heads=4, **kwargs)
    return VersaViTForImageTextRetrieval(config)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_images_of_different_sizes_pool_as_they_would_alone(family):
    """Padding is masked out of the attention pooling: a batch of mixed sizes gives each image the embedding it
    gets on its own, unit-norm; `get_image_features` carries the tower's tokens and, when asked, hidden states."""
    model = retrieval_model(family).eval()
    inputs = random_inputs(model.config, GRIDS)
    pixels = inputs["pixel_values"].split([h * w for h, w in GRIDS])
    with torch.no_grad():
        batched = model(**inputs).image_embeds
        alone = torch.cat([
            model(pixel_values=pixels[i], image_grid_thw=inputs["image_grid_thw"][i : i + 1]).image_embeds
            for i in range(len(GRIDS))
        ])
        features = model.get_image_features(**inputs, output_hidden_states=True)
    assert batched.shape == (3, 16)
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(features.pooler_output, batched)
    assert features.last_hidden_state.shape == (sum(h * w for h, w in GRIDS), model.config.embed_dim)
    assert len(features.hidden_states) == model.config.num_hidden_layers + 1


@pytest.mark.parametrize("kind", ["sigmoid", "softmax"])
def test_the_loss_is_the_contrastive_loss_of_its_embeddings_and_trains_the_head(kind):
    model = retrieval_model(retrieval_loss=kind).train()
    head = model.retrieval_head
    assert head.logit_scale.item() == pytest.approx(math.log(10.0) if kind == "sigmoid" else math.log(1 / 0.07))
    assert (head.logit_bias is not None) == (kind == "sigmoid")
    inputs = random_inputs(model.config, GRIDS)
    out = model(**inputs, text_embeds=torch.randn(3, model.config.text_embed_dim))
    expected, logits = contrastive_loss(out.image_embeds, out.text_embeds, head.logit_scale, head.logit_bias, kind=kind)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.logits_per_image, logits)
    out.loss.backward()
    trained = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    for part in ("retrieval_head.probe", "retrieval_head.attention.in_proj_weight", "retrieval_head.mlp.2.weight",
                 "retrieval_head.text_projection.0.weight", "retrieval_head.logit_scale",
                 "visual.blocks.0.attn.qkv.weight"):
        assert part in trained, part
    assert not any(name.startswith("visual.merger") for name in trained)
    # Texts without a pairing (e.g. class prompts) give logits and no loss.
    prompts = model(**inputs, text_embeds=torch.randn(5, model.config.text_embed_dim))
    assert prompts.loss is None and prompts.logits_per_image.shape == (3, 5)


def test_a_backbone_checkpoint_loads_with_a_freshly_initialised_head(tmp_path):
    """From a backbone folder the tower is the checkpoint's and the head starts at its initial values (transformers
    initialises missing weights with `_init_weights`); a saved retrieval model round-trips exactly."""
    backbone = VersaViTModel(tiny_config("qwen2_vl", retrieval_embed_dim=16, retrieval_pooling_heads=4))
    backbone.save_pretrained(tmp_path / "backbone")
    model = VersaViTForImageTextRetrieval.from_pretrained(tmp_path / "backbone")
    for name, tensor in backbone.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    head = model.retrieval_head
    assert head.logit_scale.item() == pytest.approx(math.log(10.0)) and head.logit_bias.item() == -10.0
    assert torch.isfinite(head.probe).all() and 0 < head.probe.std() < 0.1
    model.save_pretrained(tmp_path / "retrieval")
    again = VersaViTForImageTextRetrieval.from_pretrained(tmp_path / "retrieval")
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_bad_texts_and_settings_fail_by_name():
    model = retrieval_model()
    inputs = random_inputs(model.config, [(4, 4)])
    with pytest.raises(ValueError, match=r"text_embeds: expected shape \(num_texts, 24\)"):
        model(**inputs, text_embeds=torch.randn(1, 7))
    with pytest.raises(ValueError, match="text_embeds: contains NaN"):
        model(**inputs, text_embeds=torch.full((1, 24), float("nan")))
    with pytest.raises(ValueError, match="retrieval_pooling_heads: must divide the tower width 32, got 5"):
        tiny_config("qwen2_vl", retrieval_pooling_heads=5)
    with pytest.raises(ValueError, match="retrieval_loss: expected one of"):
        tiny_config("qwen2_vl", retrieval_loss="hinge")
    with pytest.raises(ValueError, match="retrieval_embed_dim: must be a positive integer"):
        tiny_config("qwen2_vl", retrieval_embed_dim=0)
    assert VersaViTConfig(retrieval_text_embed_dim=None, text_embed_dim=384).retrieval_text_embed_dim == 384


# ---------------------------------------------------------------------------------------- the evaluation recipe
def test_cached_tokens_pool_as_a_full_forward():
    """The frozen-tower training path (tokens computed once, pooled from the cache) is the forward's computation."""
    from versavit_trainer.data.readers import scene_captions
    from versavit_trainer.evaluation.retrieval import _Inputs

    model = retrieval_model().eval()
    inputs = _Inputs(model, scene_captions(3, seed=1), 56)
    tokens, grid = inputs.cached_tokens([2, 0])
    with torch.no_grad():
        cached = model.pool_tokens(tokens, grid)
        full = model.get_image_features(**inputs.pixels([2, 0])).pooler_output
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-6)


def test_karpathy_split_reader(tmp_path):
    import json

    import PIL.Image

    from versavit_trainer.data.readers import karpathy

    (tmp_path / "val2014").mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        PIL.Image.new("RGB", (40, 30), "red").save(tmp_path / "val2014" / name)
    entries = [
        {"filepath": "val2014", "filename": "a.jpg", "split": "test", "sentences": [{"raw": "A cat."}, {"raw": " "}]},
        {"filepath": "val2014", "filename": "b.jpg", "split": "restval", "sentences": [{"raw": "A dog."}]},
        {"filepath": "val2014", "filename": "c.jpg", "split": "train", "sentences": [{"raw": "A cow."}]},
    ]
    split = tmp_path / "dataset_coco.json"
    split.write_text(json.dumps({"images": entries}))
    test = karpathy(split, tmp_path, "test")
    assert test.name == "coco" and len(test) == 1
    image, captions = test.load(0)
    assert image.size == (40, 30) and captions == ["A cat."]
    assert [item[1] for item in karpathy(split, tmp_path, "train").items] == [["A dog."], ["A cow."]]
    with pytest.raises(ValueError, match="no image in split 'val'"):
        karpathy(split, tmp_path, "val")
    split.write_text(json.dumps({"images": [{"filename": "a.jpg", "split": "test", "sentences": []}]}))
    with pytest.raises(ValueError, match=r"images\[0\] \(a.jpg\) has no caption"):
        karpathy(split, tmp_path, "test")
    split.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a Karpathy split file"):
        karpathy(split, tmp_path, "test")


@pytest.mark.parametrize("backbone_learning_rate", ["0", "1e-4"])
def test_the_recipe_trains_the_head_and_writes_recall(tmp_path, backbone_learning_rate):
    import json

    from conftest import QWEN2_VISION, load_recipe

    summary = load_recipe("eval_retrieval").main([
        "--vision_config", json.dumps(QWEN2_VISION), "--num_scenes", "8", "--num_eval_scenes", "6", "--size", "56",
        "--steps", "3", "--batch_size", "4", "--embed_dim", "16", "--pooling_heads", "4",
        "--backbone_learning_rate", backbone_learning_rate, "--output_dir", str(tmp_path),
        *(["--zero_shot", "scenes", "--num_classify_scenes", "6"] if backbone_learning_rate == "0" else []),
    ])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == summary
    assert results["tower"] == ("tower frozen" if backbone_learning_rate == "0" else "tower trained")
    metrics = results["results"]
    for direction in ("image_to_text", "text_to_image"):
        values = [metrics[f"{direction}_R@{k}"] for k in (1, 5, 10)]
        assert all(0 <= v <= 1 for v in values) and values == sorted(values)
        assert values[-1] == 1.0  # 6 held-out images: the top 10 holds them all
    assert math.isfinite(metrics["final_loss"])
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert {e["metric_type"] for e in index} >= {"image_to_text_r_at_1", "text_to_image_r_at_10"}
    if backbone_learning_rate == "0":
        assert len(index) == 7 and index[-1]["task_type"] == "zero-shot-image-classification"
        zero_shot = metrics["zero_shot"]
        assert zero_shot["num_classes"] == 3 and 0 <= zero_shot["top1_accuracy"] <= 1 and zero_shot["majority"] >= 1 / 3
    else:
        assert len(index) == 6 and "zero_shot" not in metrics


def test_the_recipe_refuses_bad_options(tmp_path):
    import json

    from conftest import QWEN2_VISION, load_recipe

    recipe = load_recipe("eval_retrieval")
    base = ["--vision_config", json.dumps(QWEN2_VISION), "--output_dir", str(tmp_path)]
    with pytest.raises(SystemExit, match="dataset: expected one of"):
        recipe.main(base + ["--dataset", "imagenet"])
    with pytest.raises(SystemExit, match="split_json / image_root: coco needs"):
        recipe.main(base + ["--dataset", "coco"])
    with pytest.raises(SystemExit, match="batch_size: need at least 1 step and 2 pairs"):
        recipe.main(base + ["--batch_size", "1"])


def test_zero_shot_accuracy_is_the_argmax_over_class_prompts(tmp_path):
    """On an ImageNet-style folder: the accuracy equals an argmax over the projected prompts written out plainly;
    class names come from the folders or a JSON map."""
    import json

    import numpy as np
    import PIL.Image

    from versavit_trainer.data.readers import image_folder_classes
    from versavit_trainer.evaluation.retrieval import _Inputs, zero_shot_accuracy

    rng = np.random.default_rng(0)
    for folder, count in (("n01_golden_retriever", 3), ("n02_tabby_cat", 4), ("n03_red_car", 2)):
        (tmp_path / folder).mkdir()
        for k in range(count):
            PIL.Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / folder / f"{k}.png")
    source = image_folder_classes(tmp_path)
    assert source.class_names == ("n01 golden retriever", "n02 tabby cat", "n03 red car") and len(source) == 9
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"n01_golden_retriever": "golden retriever", "n02_tabby_cat": "tabby cat",
                                 "n03_red_car": "red car"}))
    source = image_folder_classes(tmp_path, names)
    assert source.class_names == ("golden retriever", "tabby cat", "red car")

    model = retrieval_model().eval()
    generator = torch.Generator().manual_seed(0)
    table = {name: torch.randn(24, generator=generator) for name in ("golden retriever", "tabby cat", "red car")}

    def embedder(prompts):
        return torch.stack([table[prompt] for prompt in prompts])

    result = zero_shot_accuracy(model, source, embedder, 56, template="{}", batch_size=4)
    result_a = zero_shot_accuracy(model, source, lambda p: embedder([x.removeprefix("a ") for x in p]), 56,
                                  template="a {}")
    with torch.no_grad():
        images = model.get_image_features(**_Inputs(model, source, 56).pixels(list(range(9)))).pooler_output
        prompts = model.project_text(embedder(list(source.class_names)))
    labels = torch.tensor([label for _, label in source.items])
    expected = float((torch.argmax(images @ prompts.t(), dim=1) == labels).float().mean())
    assert result["top1_accuracy"] == pytest.approx(expected) == pytest.approx(result_a["top1_accuracy"])
    assert result["majority"] == pytest.approx(4 / 9) and "top5_accuracy" not in result
    with pytest.raises(ValueError, match="template: needs a"):
        zero_shot_accuracy(model, source, embedder, 56, template="no slot")
    names.write_text(json.dumps({"n01_golden_retriever": "x"}))
    with pytest.raises(ValueError, match="no name for class folders"):
        image_folder_classes(tmp_path, names)


@pytest.mark.parametrize("two_towers", [False, True])
def test_a_siglip_text_tower_embeds_as_siglip_does(tmp_path, two_towers):
    """A SigLIP-family folder (the paper's retrieval text encoder) embeds with its own pooled head output, texts padded
    to the model's full length without a mask: equal to transformers' SiglipTextModel / SiglipModel.get_text_features
    called that way."""
    import shutil

    from transformers import AutoTokenizer, SiglipConfig, SiglipModel, SiglipTextConfig, SiglipTextModel

    from modeling_versavit import SentenceEmbedder
    from versavit_trainer.data.assets import minilm_path

    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm_path() / name).is_file():
            shutil.copy(minilm_path() / name, tmp_path / name)
    text = dict(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16, projection_size=24)
    torch.manual_seed(0)
    if two_towers:
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                      patch_size=14)
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    else:
        model = SiglipTextModel(SiglipTextConfig(**text)).eval()
    model.save_pretrained(tmp_path)
    embedder = SentenceEmbedder(tmp_path)
    assert embedder.pooling == "pooler" and embedder.dim == 24 and embedder.max_length == 16
    sentences = ["a red cube on a checkered floor", "two spheres"]
    ids = AutoTokenizer.from_pretrained(tmp_path)(sentences, padding="max_length", max_length=16, truncation=True,
                                                  return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = (model.get_text_features(input_ids=ids) if two_towers else model(input_ids=ids)).pooler_output
    torch.testing.assert_close(embedder(sentences), torch.nn.functional.normalize(expected, dim=-1))


def mmvp_folder(root, pairs=(("Color and Appearance", "the flower is red", "the flower is blue"),
                             ("Quantity and Count", "there are two dogs", "there is one dog"))):
    """MMVP-VLM's layout: Questions.csv (Question ID, Type, Statement; rows in pairs) and
    `MLLM_VLM Images/<Type>/<id>.jpg`."""
    import csv

    import numpy as np
    import PIL.Image

    rng = np.random.default_rng(0)
    rows, qid = [], 1
    for kind, *statements in pairs:
        (root / "MLLM_VLM Images" / kind).mkdir(parents=True, exist_ok=True)
        for statement in statements:
            PIL.Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(
                root / "MLLM_VLM Images" / kind / f"{qid}.jpg")
            rows.append({"Question ID": qid, "Type": kind, "Statement": statement})
            qid += 1
    with open(root / "Questions.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["Question ID", "Type", "Statement"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_statement_pairs_pass_only_when_both_statements_pick_their_own_image():
    from versavit_trainer.evaluation.retrieval import statement_pairs_passed

    similarities = torch.tensor([
        [[0.9, 0.1], [0.2, 0.8]],  # both right
        [[0.9, 0.1], [0.8, 0.2]],  # the second statement picks the first image
        [[0.1, 0.9], [0.2, 0.8]],  # the first statement picks the second image
        [[0.5, 0.5], [0.1, 0.7]],  # a tie counts against
        [[0.3, 0.2], [0.1, 0.1]],  # a tie on the second statement too
    ])
    assert statement_pairs_passed(similarities).tolist() == [True, False, False, False, False]
    with pytest.raises(ValueError, match=r"similarities: expected \(pairs, 2, 2\)"):
        statement_pairs_passed(torch.zeros(3, 2))


def test_mmvp_vlm_reader_and_pair_accuracy(tmp_path):
    """The reader pairs consecutive rows; the accuracy equals the pair test written out on the model's own image
    and statement embeddings; bad layouts are named."""
    from versavit_trainer.data.readers import mmvp_vlm
    from versavit_trainer.evaluation.retrieval import statement_pair_accuracy

    rows = mmvp_folder(tmp_path)
    source = mmvp_vlm(tmp_path)
    assert len(source) == 2 and source.items[1][2:] == ("there are two dogs", "there is one dog", "Quantity and Count")
    assert source.items[0][1].name == "2.jpg"
    model = retrieval_model().eval()
    generator = torch.Generator().manual_seed(0)
    table = {f"a photo of {row['Statement']}": torch.randn(24, generator=generator) for row in rows}

    def embedder(prompts):
        return torch.stack([table[prompt] for prompt in prompts])

    result = statement_pair_accuracy(model, source, embedder, 56)
    expected = []
    with torch.no_grad():
        for index in range(len(source)):
            first, second, s1, s2, _ = source.load(index)
            pixels = fixed_size_pixels([first, second], 56, image_processor_for(model.config))
            images = model.get_image_features(**pixels).pooler_output
            texts = model.project_text(embedder([f"a photo of {s1}", f"a photo of {s2}"]))
            s = texts @ images.t()
            expected.append(bool(s[0, 0] > s[0, 1] and s[1, 1] > s[1, 0]))
    assert result["pair_accuracy"] == pytest.approx(sum(expected) / 2) and result["num_pairs"] == 2
    assert result["per_category"] == {"Color and Appearance": float(expected[0]),
                                      "Quantity and Count": float(expected[1])}

    (tmp_path / "MLLM_VLM Images" / "Quantity and Count" / "4.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="4.jpg: missing MMVP-VLM image"):
        mmvp_vlm(tmp_path)
    with open(tmp_path / "Questions.csv", "a") as handle:
        handle.write("5,Texts,the sign says stop\n")
    with pytest.raises(ValueError, match="5 rows; MMVP-VLM's rows come in pairs"):
        mmvp_vlm(tmp_path)
    (tmp_path / "Questions.csv").write_text("id,Type,Statement\n1,Texts,a\n")
    with pytest.raises(ValueError, match=r"missing columns \['Question ID'\]"):
        mmvp_vlm(tmp_path)
    (tmp_path / "Questions.csv").write_text("Question ID,Type,Statement\n1,Texts,a\n2,Color and Appearance,b\n")
    with pytest.raises(ValueError, match="a pair's two rows have different Types"):
        mmvp_vlm(tmp_path)


def test_the_recipe_scores_mmvp(tmp_path):
    import json

    from conftest import QWEN2_VISION, load_recipe

    mmvp_folder(tmp_path / "mmvp")
    summary = load_recipe("eval_retrieval").main([
        "--vision_config", json.dumps(QWEN2_VISION), "--num_scenes", "8", "--num_eval_scenes", "4", "--size", "56",
        "--steps", "2", "--batch_size", "4", "--embed_dim", "16", "--pooling_heads", "4",
        "--mmvp", str(tmp_path / "mmvp"), "--output_dir", str(tmp_path / "out"),
    ])
    mmvp = summary["results"]["mmvp"]
    assert mmvp["num_pairs"] == 2 and mmvp["pair_accuracy"] in (0.0, 0.5, 1.0)
    assert summary["model_index"][-1]["dataset_name"] == "MMVP-VLM"


def test_a_missing_mmvp_image_fails_before_the_head_trains(tmp_path, monkeypatch):
    import json

    from conftest import QWEN2_VISION, load_recipe

    from versavit_trainer.data.readers import mmvp_vlm

    mmvp_folder(tmp_path / "mmvp")
    next((tmp_path / "mmvp").rglob("*.jpg")).unlink()
    recipe = load_recipe("eval_retrieval")
    monkeypatch.setattr(recipe, "train_retrieval", lambda *args, **kwargs: pytest.fail("the head trained first"))
    with pytest.raises(SystemExit, match="missing MMVP-VLM image"):
        recipe.main(["--vision_config", json.dumps(QWEN2_VISION), "--num_scenes", "8", "--num_eval_scenes", "4",
                     "--size", "56", "--mmvp", str(tmp_path / "mmvp"), "--output_dir", str(tmp_path / "out")])
    # a Type that climbs out of the image folder is refused by name, not read
    table = tmp_path / "mmvp" / "Questions.csv"
    table.write_text(table.read_text().replace("Color and Appearance", "../../elsewhere"))
    with pytest.raises(ValueError, match=r"Questions.csv:2: '../../elsewhere/1.jpg' is not a path inside"):
        mmvp_vlm(tmp_path / "mmvp")
