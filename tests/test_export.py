"""Swapping the vision tower of an MLLM (every tower family) for a VersaViT encoder, on disk and in memory."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import QWEN2_VISION, load_recipe, random_inputs, tiny_config
from mllm_fixtures import IMAGE_TOKENS, MLLMS, save_tiny_mllm, whole_image_mllm_inputs
from safetensors import safe_open
from transformers import AutoModelForImageTextToText, LlamaConfig

from modeling_versavit import VersaViTConfig, VersaViTForMultiTask, VersaViTModel, safetensors_weight_map
from versavit_trainer.export.mllm import swap_vision_tower, swap_vision_tower_in_memory

HERE = Path(__file__).resolve().parent


def tensor_hashes(folder: Path) -> dict[str, str]:
    hashes = {}
    for name, shard in safetensors_weight_map(folder).items():
        with safe_open(folder / shard, framework="pt") as handle:
            tensor = handle.get_tensor(name)
        hashes[name] = hashlib.sha256(tensor.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
    return hashes


def trained_encoder(mllm_dir: Path) -> VersaViTModel:
    """The MLLM's tower with every weight but its mergers' (the PatchMerger, Qwen3-VL's DeepStack mergers) moved, as
    post-training does."""
    encoder = VersaViTModel.from_mllm(mllm_dir)
    owned = encoder.config.backbone.mllm_owned
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in encoder.visual.named_parameters():
            if not name.startswith(tuple(part + "." for part in owned)):
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return encoder


@pytest.fixture(params=sorted(MLLMS))
def mllm_dir(request, tmp_path):
    folder = tmp_path / f"{request.param}-mllm"
    save_tiny_mllm(request.param, folder, shard_size="100KB")
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 64}')  # a non-weight file to carry over
    return folder


def test_swap_puts_the_encoder_in_and_leaves_everything_else(tmp_path, mllm_dir):
    encoder = trained_encoder(mllm_dir)
    out = swap_vision_tower(mllm_dir, encoder, tmp_path / "swapped")
    before, after = tensor_hashes(mllm_dir), tensor_hashes(out)
    assert before.keys() == after.keys()
    prefix = encoder.config.backbone.tower_prefix(before)
    kept = tuple(prefix + part + "." for part in encoder.config.backbone.mllm_owned)
    family = encoder.config.backbone_family
    # (LFM2-VL and PaliGemma drop SigLIP's head; InternVL's connector is outside its tower: nothing kept)
    assert any(name.startswith(kept) for name in before) or family.startswith("siglip") or family == "internvit"
    for name in before:
        vision = name.startswith(prefix) and not name.startswith(kept)
        assert (before[name] != after[name]) == vision, name
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(p.name for p in mllm_dir.glob("*.safetensors"))
    assert len(list(out.glob("*.safetensors"))) > 1  # sharded as the source
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == json.loads((mllm_dir / "model.safetensors.index.json").read_text())["weight_map"]
    assert (out / "tokenizer_config.json").read_text() == '{"model_max_length": 64}'
    assert (out / "config.json").read_text() == (mllm_dir / "config.json").read_text()

    # the loaded MLLM sees with the encoder's features, and generates
    mllm = AutoModelForImageTextToText.from_pretrained(out).eval()
    if not family.startswith("qwen"):  # LFM2-VL / PaliGemma / InternVL: the tower on its own processor's batch
        tower_in, ours_in, generate_in, grids = whole_image_mllm_inputs(family, encoder.config)
        with torch.no_grad():
            theirs = mllm.model.vision_tower(**tower_in).last_hidden_state
            (maps,) = encoder.get_dense_features(**ours_in, layers=[-1], stack=False)
        cls = encoder.config.backbone.prefix_tokens  # InternViT's CLS token comes first
        for image, ((h, w), feature_map) in enumerate(zip(grids, maps, strict=True)):
            raster = theirs[image, cls : cls + h * w].reshape(h, w, -1).permute(2, 0, 1)
            torch.testing.assert_close(feature_map, raster)
        generated = mllm.generate(**generate_in, max_new_tokens=3, do_sample=False)
        assert generated.shape == (1, generate_in["input_ids"].shape[1] + 3)
        return
    inputs = random_inputs(encoder.config, [(4, 4)], seed=3)
    with torch.no_grad():
        theirs = mllm.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
        ours = encoder(**inputs)
    # The weights are bit-exact (above); the outputs agree to float32 rounding, because VersaViT computes the patch
    # embedding as a matmul and the MLLM as a Conv3d.
    torch.testing.assert_close(theirs.last_hidden_state, ours.last_hidden_state)
    torch.testing.assert_close(theirs.pooler_output, ours.pooler_output)
    for mine, reference in zip(ours.deepstack_features or (), theirs.get("deepstack_features") or (), strict=True):
        torch.testing.assert_close(mine, reference)  # Qwen3-VL: the MLLM's DeepStack mergers on the new tower
    image = IMAGE_TOKENS["image_token_id"]
    input_ids = torch.tensor(
        [[5, IMAGE_TOKENS["vision_start_token_id"]] + [image] * 4 + [IMAGE_TOKENS["vision_end_token_id"], 6]]
    )
    generated = mllm.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=3,
                              do_sample=False, **inputs)
    assert generated.shape == (1, input_ids.shape[1] + 3)


def test_swapping_the_mllm_own_tower_changes_no_tensor(tmp_path, mllm_dir):
    out = swap_vision_tower(mllm_dir, VersaViTModel.from_mllm(mllm_dir), tmp_path / "same")
    assert tensor_hashes(out) == tensor_hashes(mllm_dir)


def test_a_saved_encoder_folder_and_the_in_memory_swap(tmp_path, mllm_dir):
    encoder = trained_encoder(mllm_dir)
    encoder.save_pretrained(tmp_path / "encoder")
    from_folder = swap_vision_tower(mllm_dir, tmp_path / "encoder", tmp_path / "swapped")
    from_model = swap_vision_tower(mllm_dir, encoder, tmp_path / "swapped2")
    assert tensor_hashes(from_folder) == tensor_hashes(from_model)

    mllm = AutoModelForImageTextToText.from_pretrained(mllm_dir).eval()
    swap_vision_tower_in_memory(mllm, encoder)
    on_disk = AutoModelForImageTextToText.from_pretrained(from_model)
    for (name, a), (_, b) in zip(mllm.state_dict().items(), on_disk.state_dict().items()):
        assert torch.equal(a, b), name


def test_projector_replaces_the_merger_when_asked(tmp_path):
    family = "qwen2_vl"
    mllm_dir = tmp_path / "mllm"
    mllm = save_tiny_mllm(family, mllm_dir)
    llm = LlamaConfig(vocab_size=128, hidden_size=mllm.config.text_config.hidden_size, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    config = tiny_config(family, text_config=llm.to_dict(), image_token_id=127)
    model = VersaViTForMultiTask(config)
    model.visual.load_state_dict(VersaViTModel.from_mllm(mllm_dir).visual.state_dict())
    out = swap_vision_tower(mllm_dir, model, tmp_path / "swapped", use_projector=True)
    swapped = AutoModelForImageTextToText.from_pretrained(out)
    for name, value in model.projector.state_dict().items():
        assert torch.equal(swapped.model.visual.merger.state_dict()[name], value), name
    kept = swap_vision_tower(mllm_dir, model, tmp_path / "kept")  # default: the MLLM's own merger stays
    assert tensor_hashes(kept) == tensor_hashes(mllm_dir)


def test_a_mismatched_encoder_fails_before_writing(tmp_path):
    mllm_dir = tmp_path / "mllm"
    save_tiny_mllm("qwen2_vl", mllm_dir)
    out = tmp_path / "never"
    wrong = VersaViTModel(VersaViTConfig(vision_config={**QWEN2_VISION, "depth": 2, "num_heads": 2}))
    with pytest.raises(ValueError) as info:
        swap_vision_tower(mllm_dir, wrong, out)
    message = str(info.value)
    assert (
        "vision_config.depth: encoder 2, MLLM 3" in message and "vision_config.num_heads: encoder 2, MLLM 4" in message
    )
    assert not out.exists()
    with pytest.raises(ValueError, match="backbone family: encoder 'qwen2_5_vl', MLLM 'qwen2_vl'"):
        swap_vision_tower(mllm_dir, VersaViTModel(tiny_config("qwen2_5_vl")), out)
    with pytest.raises(ValueError, match="use_projector: the encoder has no captioning projector"):
        swap_vision_tower(mllm_dir, VersaViTModel.from_mllm(mllm_dir), out, use_projector=True)
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("work")
    with pytest.raises(FileExistsError, match=r"is not empty \(keep.txt\)"):
        swap_vision_tower(mllm_dir, VersaViTModel.from_mllm(mllm_dir), out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_recipe(tmp_path):
    mllm_dir = tmp_path / "mllm"
    save_tiny_mllm("qwen2_5_vl", mllm_dir)
    encoder = trained_encoder(mllm_dir)
    encoder.save_pretrained(tmp_path / "encoder")
    load_recipe("swap_vision_tower").main(
        ["--mllm", str(mllm_dir), "--encoder", str(tmp_path / "encoder"), "--out", str(tmp_path / "out")]
    )
    assert tensor_hashes(tmp_path / "out") == tensor_hashes(swap_vision_tower(mllm_dir, encoder, tmp_path / "api"))


PEAK_SCRIPT = """
import json, sys, threading, time
sys.path.insert(0, {tests!r})
from versavit_trainer.export import swap_vision_tower
from modeling_versavit import VersaViTModel

def rss():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096

encoder = VersaViTModel.from_mllm({mllm!r})
start, peak, done = rss(), [0], threading.Event()

def watch():  # the current resident set, sampled every millisecond during the swap
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.001)

watcher = threading.Thread(target=watch)
watcher.start()
swap_vision_tower({mllm!r}, encoder, {out!r})
done.set()
watcher.join()
print(json.dumps({{"growth": peak[0] - start}}))
"""


def test_streaming_swap_peak_memory_stays_near_one_shard(tmp_path):
    mllm_dir = tmp_path / "mllm"
    # ~240 MB of LLM weights (12 layers of 512 x 2048) in 20 MB shards; never run, only swapped
    save_tiny_mllm(
        "qwen2_vl",
        mllm_dir,
        shard_size="20MB",
        vision={"hidden_size": 512},
        vocab_size=8000,
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=12,
        tie_word_embeddings=False,
    )
    total = sum(p.stat().st_size for p in mllm_dir.glob("*.safetensors"))
    largest = max(p.stat().st_size for p in mllm_dir.glob("*.safetensors"))
    script = PEAK_SCRIPT.format(tests=str(HERE), mllm=str(mllm_dir), out=str(tmp_path / "out"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    growth = json.loads(result.stdout.strip().splitlines()[-1])["growth"]
    print(
        f"peak growth {growth / 2**20:.0f} MiB; total {total / 2**20:.0f} MiB, largest shard {largest / 2**20:.0f} MiB"
    )
    assert total > 8 * largest
    assert growth < 3 * largest, (growth, largest, total)
