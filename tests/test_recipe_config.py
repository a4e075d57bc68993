"""Recipe configuration: YAML + command-line overrides, errors that name the key, and the resolved config."""

from pathlib import Path

import pytest
import yaml

from versavit_trainer import MultiTaskTrainingArguments
from versavit_trainer.config import ConfigError, parse_config, resolved_config
from versavit_trainer.core.lora import LoraArguments
from versavit_trainer.core.options import DataArguments, ModelArguments, RunArguments, check_input_sizes

TYPES = (ModelArguments, LoraArguments, DataArguments, RunArguments, MultiTaskTrainingArguments)
CONFIGS = Path(__file__).resolve().parent.parent / "recipes" / "configs"


def write(tmp_path, data) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_file_values_are_typed_and_flags_override_them(tmp_path):
    path = write(tmp_path, {
        "output_dir": str(tmp_path / "out"), "max_steps": 7, "learning_rate": 2e-3, "tasks": ["depth", "segmentation"],
        "vision_config": {"model_type": "qwen2_vl_vision", "depth": 2}, "use_cpu": True, "max_turns": None,
        "head_config": {"depth_layer_indices": [1, 2, 2]},
    })
    model, lora, data, run, training = parse_config(TYPES, ["--config", path, "--max_steps", "9", "--tasks", "depth"])
    assert training.max_steps == 9 and training.learning_rate == 2e-3 and training.use_cpu is True
    assert data.tasks == ["depth"] and data.max_turns is None
    assert model.vision_config == {"model_type": "qwen2_vl_vision", "depth": 2}
    assert model.head_config == {"depth_layer_indices": [1, 2, 2]}
    assert run.config == path


def test_unknown_key_is_named_with_the_file_and_a_suggestion(tmp_path):
    path = write(tmp_path, {"max_step": 3})
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown key 'max_step' \(did you mean 'max_steps'\?\)"):
        parse_config(TYPES, ["--config", path])


def test_wrong_types_name_the_option_and_the_value(tmp_path):
    path = write(tmp_path, {"max_steps": "many"})
    with pytest.raises(ConfigError, match=r"run\.yaml: key 'max_steps': invalid int value: 'many'"):
        parse_config(TYPES, ["--config", path])
    with pytest.raises(
        ConfigError, match=r"command line: argument --depth_size/--depth-size: invalid int value: '1.5'"
    ):
        parse_config(TYPES, ["--depth_size", "1.5"])
    with pytest.raises(ConfigError, match=r"key 'depth_size' takes one value"):
        parse_config(TYPES, ["--config", write(tmp_path, {"depth_size": [1, 2]})])
    with pytest.raises(ConfigError, match=r"depth_size: must be a positive multiple of 1.*got -28"):
        parse_config(TYPES, ["--depth_size", "-28"])
    # the multiple is the tower's patch x merge, checked once the tower is known (check_input_sizes, in plan_run)
    data_args = parse_config(TYPES, ["--depth_size", "100"])[2]
    with pytest.raises(
        ConfigError,
        match=r"depth_size: must be a positive multiple of 28 \(the tower's patch x merge\), "
        r"got 100",
    ):
        check_input_sizes(data_args, 28)
    data_args = parse_config(
        TYPES, ["--depth_size", "64", "--segmentation_size", "64", "--depth_resolutions", "64x96"]
    )[2]
    check_input_sizes(data_args, 32)  # a patch-16 tower
    data_args.depth_resolutions = ["64x96", "64x84"]
    with pytest.raises(ConfigError, match=r"depth_resolutions: '64x84' has a side that is not a multiple of 32"):
        check_input_sizes(data_args, 32)
    with pytest.raises(ConfigError, match=r"vision_config: expected a YAML / JSON mapping, got '\[depth, 2\]'"):
        parse_config(TYPES, ["--vision_config", "[depth, 2]"])
    with pytest.raises(ConfigError, match=r"vision_config\.model_type: expected one of"):  # YAML flow is a mapping
        parse_config(TYPES, ["--vision_config", "{depth: 2}"])
    with pytest.raises(ConfigError, match=r"unrecognised arguments \['--nonsense', '1'\]"):
        parse_config(TYPES, ["--nonsense", "1"])
    with pytest.raises(ConfigError, match=r"--config: no such file"):
        parse_config(TYPES, ["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(ConfigError, match=r"expected a mapping"):
        parse_config(TYPES, ["--config", write(tmp_path, [1, 2])])
    with pytest.raises(ConfigError, match=r"model: give one backbone source, got \['model_name_or_path', 'mllm'\]"):
        parse_config(TYPES, ["--model_name_or_path", "a", "--mllm", "b"])


@pytest.mark.parametrize("name", ["default.yaml", "versavit_qwen2vl_7b.yaml", "default_dynamic.yaml",
                                  "versavit_qwen2vl_7b_dynamic.yaml", "versavit_qwen2_5vl_7b.yaml",
                                  "versavit_qwen3vl_8b.yaml", "versavit_siglip2_so400m.yaml", "sailvit_default.yaml",
                                  "sailvit_qwen2vl_7b.yaml", "sailvit_internvit_300m.yaml", "sailvit_attach.yaml",
                                  "visper_default.yaml", "miniature_pretrain.yaml",
                                  "visper_llava15.yaml"])
def test_shipped_configs_parse_and_their_resolved_form_round_trips(tmp_path, name):
    on_cpu = ["--use_cpu", "true"]  # the paper config asks for bf16, which TrainingArguments checks against the machine
    parsed = parse_config(TYPES, ["--config", str(CONFIGS / name), *on_cpu])
    resolved = resolved_config(*parsed)
    again = parse_config(TYPES, ["--config", write(tmp_path, resolved), *on_cpu])
    assert resolved_config(*again) == resolved


def test_the_paper_config_holds_the_paper_settings():
    model, lora, data, run, training = parse_config(
        TYPES, ["--config", str(CONFIGS / "versavit_qwen2vl_7b.yaml"), "--use_cpu", "true"]
    )
    assert (data.captioning_batch_size, data.depth_batch_size, data.segmentation_batch_size) == (8, 32, 32)
    assert (data.caption_max_pixels, data.depth_size, data.segmentation_size) == (896 * 896, 532, 560)
    assert (training.learning_rate, training.backbone_learning_rate, training.alignment_learning_rate) == (
        1e-4,
        1e-5,
        1e-3,
    )
    assert data.captioning_weight == data.depth_weight == data.segmentation_weight == pytest.approx(1 / 3)
    assert training.bf16 and training.activation_checkpointing and training.train_language_model
    assert run.dry_run_sharding == "zero2" and training.num_train_epochs == 1 and run.alignment_num_train_epochs == 1


def test_without_config_the_recipes_default_is_used_and_said_first(tmp_path, capsys):
    from versavit_trainer.config import DefaultConfig

    default = DefaultConfig(Path(write(tmp_path, {"max_steps": 7, "vision_config": {"model_type": "qwen2_vl_vision"}})),
                            "a small run", "the big one is --config big.yaml")
    model, lora, data, run, training = parse_config(TYPES, ["--output_dir", str(tmp_path)], default_config=default)
    assert training.max_steps == 7 and run.config == str(default.path)
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (f"Config: {default.path}, the embedded default (no --config given): a small run; the big one is "
                     "--config big.yaml")
    # an explicit --config wins over the default, and says nothing of it
    parsed = parse_config(TYPES, ["--config", write(tmp_path, {"max_steps": 3})], default_config=default)
    assert parsed[4].max_steps == 3 and "embedded default" not in capsys.readouterr().out


def test_environment_overrides_sit_between_the_file_and_the_flags(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, {"max_steps": 7, "learning_rate": 2e-3, "output_dir": str(tmp_path)})
    monkeypatch.setenv("VERSAVIT_CONFIG_OVERRIDES", '{"max_steps": 2, "num_scenes": 5}')
    *_, data, run, training = parse_config(TYPES, ["--config", path])
    assert (training.max_steps, data.num_scenes, training.learning_rate) == (2, 5, 2e-3)
    assert "overridden by $VERSAVIT_CONFIG_OVERRIDES: max_steps=2, num_scenes=5" in capsys.readouterr().out
    *_, training = parse_config(TYPES, ["--config", path, "--max_steps", "9"])
    assert training.max_steps == 9
    monkeypatch.setenv("VERSAVIT_CONFIG_OVERRIDES", "max_stpes: 2")
    with pytest.raises(ConfigError, match=r"\$VERSAVIT_CONFIG_OVERRIDES: unknown key 'max_stpes' \(did you mean"):
        parse_config(TYPES, ["--config", path])
    monkeypatch.setenv("VERSAVIT_CONFIG_OVERRIDES", "[1, 2]")
    with pytest.raises(ConfigError, match=r"\$VERSAVIT_CONFIG_OVERRIDES: expected a YAML / JSON mapping"):
        parse_config(TYPES, ["--config", path])


def test_a_backbone_source_given_above_replaces_the_files(tmp_path):
    """`--mllm DIR` over a config whose backbone is a `vision_config` (the embedded default's) uses the MLLM."""
    path = write(
        tmp_path, {"vision_config": {"model_type": "qwen2_vl_vision", "depth": 2}, "output_dir": str(tmp_path)}
    )
    model, *_ = parse_config(TYPES, ["--config", path, "--mllm", "models/Qwen2-VL-7B-Instruct"])
    assert model.mllm == "models/Qwen2-VL-7B-Instruct" and model.vision_config is None
    model, *_ = parse_config(TYPES, ["--config", path])
    assert model.vision_config == {"model_type": "qwen2_vl_vision", "depth": 2} and model.mllm is None
    # within one level, two sources are still an error
    with pytest.raises(ConfigError, match=r"give one backbone source"):
        parse_config(TYPES, ["--config", path, "--mllm", "a", "--model_name_or_path", "b"])


def test_required_options_can_come_from_the_file(tmp_path):
    """compare.py's --encoders is required: the file may give it, and other keys are still checked one by one."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare", CONFIGS.parent / "evaluation" / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    types = (compare.CompareArguments, compare.ProbeSettings)
    args, settings = parse_config(types, ["--config", write(tmp_path, {"encoders": ["a", "random"], "size": 56})])
    assert args.encoders == ["a", "random"] and settings.size == 56
    with pytest.raises(ConfigError, match=r"run\.yaml: key 'size': invalid int value: 'big'"):
        parse_config(types, ["--config", write(tmp_path, {"encoders": ["a"], "size": "big"})])


def test_a_config_file_builds_on_its_base(tmp_path, capsys):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "paper.yaml").write_text(yaml.safe_dump({
        "vision_config": {"model_type": "qwen2_vl_vision", "depth": 2}, "max_steps": 7, "learning_rate": 2e-3,
        "head_config": {"depth_layer_indices": [1, 2, 2]}, "tasks": ["depth", "segmentation"], "use_cpu": True,
    }))
    variant = tmp_path / "variant.yaml"
    variant.write_text(yaml.safe_dump({"base": "configs/paper.yaml", "max_steps": 9, "mllm": "models/qwen",
                                       "head_config": {"segmentation_hidden_size": 32}}))
    model, _, data, _, training = parse_config(TYPES, ["--config", str(variant), "--learning_rate", "1e-4"])
    assert training.max_steps == 9 and training.learning_rate == 1e-4 and data.tasks == ["depth", "segmentation"]
    assert (
        model.mllm == "models/qwen" and model.vision_config is None
    )  # the variant's backbone source replaces the base's
    assert model.head_config == {"segmentation_hidden_size": 32}  # a key replaces the base's value whole
    assert "on top of its base" in capsys.readouterr().out
    (tmp_path / "configs" / "paper.yaml").write_text(yaml.safe_dump({"max_stepz": 3}))
    with pytest.raises(ConfigError, match=r"paper\.yaml: unknown key 'max_stepz' \(did you mean 'max_steps'\?\)"):
        parse_config(TYPES, ["--config", str(variant)])
    (tmp_path / "configs" / "paper.yaml").write_text(yaml.safe_dump({"base": "../variant.yaml"}))
    with pytest.raises(ConfigError, match=r"paper\.yaml: key 'base': '\.\./variant\.yaml' is already a base"):
        parse_config(TYPES, ["--config", str(variant)])
    variant.write_text(yaml.safe_dump({"base": "missing.yaml"}))
    with pytest.raises(ConfigError, match=r"variant\.yaml: key 'base': no such file '.*missing\.yaml'"):
        parse_config(TYPES, ["--config", str(variant)])


@pytest.mark.parametrize("base", ["default", "versavit_qwen2vl_7b"])
def test_the_dynamic_resolution_variants_change_only_the_resolutions(base):
    from versavit_trainer.objectives.dense import largest_pixels

    on_cpu = ["--use_cpu", "true"]
    fixed = resolved_config(*parse_config(TYPES, ["--config", str(CONFIGS / f"{base}.yaml"), *on_cpu]))
    parsed = parse_config(TYPES, ["--config", str(CONFIGS / f"{base}_dynamic.yaml"), *on_cpu])
    dynamic = resolved_config(*parsed)
    changed = {key for key in fixed.keys() | dynamic.keys() if fixed.get(key) != dynamic.get(key)}
    assert changed == {"output_dir", "depth_resolutions", "segmentation_resolutions"}
    assert fixed["depth_resolutions"] is None  # off in the paper config
    data = parsed[2]
    for task in ("depth", "segmentation"):  # each set holds the fixed size, within 3% of its pixels
        size = getattr(data, f"{task}_size")
        assert f"{size}x{size}" in getattr(data, f"{task}_resolutions")
        assert size**2 <= largest_pixels(data, task) <= 1.03 * size**2
