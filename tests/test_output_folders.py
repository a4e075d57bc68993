"""Nothing lost, nothing overwritten, nothing run that was not asked for: an output folder belongs to one run
(`versavit_trainer.run_folder`), resumable conversions are tied to their inputs, configs are data, and paths taken
from input files stay inside their folders."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import load_recipe, tiny_run_config

from versavit_trainer.config import ConfigError
from versavit_trainer.run_folder import OWNER_FILE, OutputFolderError, claim_output_dir, release_output_dir

ROOT = Path(__file__).resolve().parent.parent


class Built(Exception):
    """Raised in place of building the model: the run got past every check of its output folder."""


@pytest.fixture
def recipe(monkeypatch):
    """recipes/multitask.py whose model build is replaced by `Built`, so a test sees how far a run got."""
    module = load_recipe("multitask")

    def build_model(*args, **kwargs):
        raise Built

    monkeypatch.setattr(module, "build_model", build_model)
    return module


# run_folder imports nothing of the package: another process reads it alone, in a fraction of a second
IMPORT_RUN_FOLDER = (
    f"import sys; sys.path.insert(0, {str(ROOT / 'trainer')!r}); from run_folder import claim_output_dir; "
)


def hold_in_another_process(folder: Path, recipe: str = "recipes/multitask.py") -> subprocess.Popen:
    code = (IMPORT_RUN_FOLDER + "import time; "
            f"claim_output_dir({str(folder)!r}, {recipe!r}); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_run_into_a_folder_another_run_holds_is_refused_before_building_a_model(tmp_path, tiny_llm, recipe):
    config = tiny_run_config(tmp_path, tiny_llm)
    folder = tmp_path / "run"
    holder = hold_in_another_process(folder)
    try:
        started = time.monotonic()
        with pytest.raises(OutputFolderError, match=rf"{folder} is in use by another run \(recipes/multitask.py, "
                                                    rf"pid {holder.pid} on "):
            recipe.main(["--config", str(config)])
        assert time.monotonic() - started < 30  # at once, not after building and training
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed run: the operating system drops its lock
        holder.wait()
    # the killed run's lock does not block the next run, nor its --resume
    with pytest.raises(Built):
        recipe.main(["--config", str(config), "--resume", "true"])
    release_output_dir(folder)


@pytest.mark.e2e
def test_two_runs_started_together_into_one_folder_one_trains_the_other_is_refused(tmp_path, tiny_llm):
    config = tiny_run_config(tmp_path, tiny_llm, tasks=["depth"], alignment_max_steps=0, max_steps=6,
                             num_eval_scenes=0, panel_samples=0, report_to="none", save_strategy="no")
    command = [sys.executable, str(ROOT / "recipes" / "multitask.py"), "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    runs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    ended = {}
    while len(ended) < 2:
        for k, run in enumerate(runs):
            if k not in ended and run.poll() is not None:
                ended[k] = time.monotonic() - started
        time.sleep(0.1)
    outputs = [run.communicate() for run in runs]
    codes = [run.returncode for run in runs]
    assert sorted(codes) == [0, 1], [err[-2000:] for _, err in outputs]
    winner, refused = codes.index(0), codes.index(1)
    message = outputs[refused][1]
    if "is in use by another run (recipes/multitask.py, pid " in message:  # it came while the other trained
        assert ended[refused] < ended[winner]  # at once (that no model is built first: the in-process test above)
    else:  # a loaded machine started it after the other had finished: refused all the same, nothing overwritten
        assert "already holds a run of recipes/multitask.py" in message, message[-2000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stages"]["multitask"]["steps"] == 6


def test_a_run_that_comes_just_after_another_took_the_lock_still_names_it(tmp_path):
    """Two runs started together: the loser can read the lock in the instant between the winner taking it and
    writing its name into it (what CI once hit); it waits for the name rather than saying "another process"."""
    folder = tmp_path / "out"
    folder.mkdir()
    code = ("import fcntl, time; "
            f"handle = open({str(folder / '.versavit.lock')!r}, 'a+'); fcntl.flock(handle, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(0.5); "
            "handle.write('recipes/align.py, pid 1 on there'); handle.flush(); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputFolderError, match=r"in use by another run \(recipes/align.py, pid 1 on there\)"):
            claim_output_dir(folder, "recipes/multitask.py")
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_run_leaves_no_lock_behind(tmp_path):
    folder = tmp_path / "out"
    code = (IMPORT_RUN_FOLDER + "import os, signal; "
            f"claim_output_dir({str(folder)!r}, 'recipes/multitask.py'); "
            f"open({str(folder / 'config.yaml')!r}, 'w').write('x: 1'); os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run([sys.executable, "-c", code], cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL
    assert claim_output_dir(folder, "recipes/multitask.py", resume=True) is True  # its own run, resumed
    release_output_dir(folder)


def test_a_folder_of_another_recipe_or_of_other_files_is_refused_naming_what_is_there(tmp_path, tiny_llm, recipe):
    config = tiny_run_config(tmp_path, tiny_llm)
    folder = tmp_path / "run"
    (folder / "final").mkdir(parents=True)
    (folder / "summary.json").write_text("{}")
    (folder / OWNER_FILE).write_text(json.dumps({"recipe": "recipes/finetune_depth.py"}))
    for extra in ([], ["--resume", "true"]):
        with pytest.raises(OutputFolderError, match=r"holds a run of recipes/finetune_depth.py \(final, "
                                                    r"summary.json\); choose another folder, or pass "
                                                    r"--overwrite_output_dir true"):
            recipe.main(["--config", str(config), *extra])
    assert (folder / "summary.json").read_text() == "{}" and (folder / "final").is_dir()
    release_output_dir(folder)

    mine = tmp_path / "mine"
    (mine / "notes.txt").parent.mkdir()
    (mine / "notes.txt").write_text("my own work")
    with pytest.raises(OutputFolderError, match=r"holds files that no run of this library wrote \(notes.txt\)"):
        recipe.main(["--config", str(config), "--output_dir", str(mine)])
    assert (mine / "notes.txt").read_text() == "my own work"
    release_output_dir(mine)

    # the flag that overrides it empties the folder, and the run goes on to build its model
    with pytest.raises(Built):
        recipe.main(["--config", str(config), "--overwrite_output_dir", "true"])
    assert sorted(p.name for p in folder.iterdir()) == [".versavit.lock", OWNER_FILE]
    assert json.loads((folder / OWNER_FILE).read_text()) == {"recipe": "recipes/multitask.py"}
    release_output_dir(folder)


def test_fine_tuning_into_a_multitask_run_s_folder_is_refused(tmp_path, tiny_llm, recipe):
    with pytest.raises(Built):
        recipe.main(["--config", str(tiny_run_config(tmp_path, tiny_llm))])
    (tmp_path / "run" / "config.yaml").write_text("max_steps: 4\n")  # what the run had written by then
    release_output_dir(tmp_path / "run")
    with pytest.raises(OutputFolderError, match=r"holds a run of recipes/multitask.py \(config.yaml\)"):
        load_recipe("finetune_depth").main(["--model_name_or_path", str(tmp_path), "--output_dir",
                                            str(tmp_path / "run"), "--use_cpu", "true", "--resume", "true"])
    release_output_dir(tmp_path / "run")


def test_a_run_that_stopped_before_writing_anything_does_not_block_its_corrected_rerun(tmp_path, tiny_llm, recipe):
    config = tiny_run_config(tmp_path, tiny_llm)
    with pytest.raises(Built):
        recipe.main(["--config", str(config)])
    with pytest.raises(Built):  # run.json alone: nothing was written, so this is not "a run to resume"
        recipe.main(["--config", str(config)])
    release_output_dir(tmp_path / "run")


def test_push_to_hub_keeps_a_local_dir_that_holds_the_user_s_files(tmp_path):
    from conftest import tiny_config

    from modeling_versavit import VersaViTModel

    VersaViTModel(tiny_config()).save_pretrained(tmp_path / "backbone")
    local = tmp_path / "upload"
    local.mkdir()
    (local / "README.md").write_text("my model card")
    args = ["--model", str(tmp_path / "backbone"), "--repo_id", "org/versavit", "--local_dir", str(local)]
    push = load_recipe("push_to_hub")
    with pytest.raises(OutputFolderError, match=r"upload is not empty \(README.md\); choose an empty or new folder, "
                                                r"or pass --overwrite true"):
        push.main(args)
    assert (local / "README.md").read_text() == "my model card"
    push.main([*args, "--overwrite", "true"])
    assert (local / "model.safetensors").is_file() and "my model card" not in (local / "README.md").read_text()


def test_an_mllm_index_naming_a_shard_outside_its_folder_is_refused(tmp_path):
    from mllm_fixtures import save_tiny_mllm

    from modeling_versavit import VersaViTModel, safetensors_weight_map
    from versavit_trainer.export.mllm import swap_vision_tower

    mllm = tmp_path / "mllm"
    save_tiny_mllm("qwen2_vl", mllm)
    encoder = VersaViTModel.from_mllm(mllm)
    index_file = mllm / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    other = tmp_path / "other"
    other.mkdir()
    (other / shard).write_bytes((mllm / shard).read_bytes())
    before = (other / shard).read_bytes()
    for escaping in (f"../other/{shard}", str(other / shard)):
        index["weight_map"] = {k: (escaping if v == shard else v) for k, v in index["weight_map"].items()}
        index_file.write_text(json.dumps(index))
        with pytest.raises(ValueError, match=rf"names the shard '{escaping}', which is not a plain file name"):
            safetensors_weight_map(mllm)
        with pytest.raises(ValueError, match="not a plain file name"):
            swap_vision_tower(mllm, encoder, tmp_path / f"out{len(escaping)}")
        assert (other / shard).read_bytes() == before
        index["weight_map"] = {k: (shard if v == escaping else v) for k, v in index["weight_map"].items()}


# ------------------------------------------------------------------------------------- configs are data
def test_imports_in_a_config_file_or_the_overrides_are_refused_even_in_a_dry_run(tmp_path, tiny_llm, monkeypatch):
    marker = tmp_path / "ran"
    code = tmp_path / "payload.py"
    code.write_text(f"open({str(marker)!r}, 'w').write('code ran')\n")
    config = tiny_run_config(tmp_path, tiny_llm, imports=[str(code)])
    recipe = load_recipe("multitask")
    for argv in (["--config", str(config)], ["--config", str(config), "--dry_run"]):
        with pytest.raises(ConfigError, match=rf"tiny.yaml: imports: \['{code}'\] would run code, and configs are "
                                              r"data; code runs only from the command line's --imports"):
            recipe.main(argv)
    monkeypatch.setenv("VERSAVIT_CONFIG_OVERRIDES", json.dumps({"imports": [str(code)]}))
    with pytest.raises(ConfigError, match=r"\$VERSAVIT_CONFIG_OVERRIDES: imports: .* would run code"):
        recipe.main(["--config", str(tiny_run_config(tmp_path, tiny_llm)), "--dry_run"])
    assert not marker.exists()


# ------------------------------------------------------------------------------------------- run settings
@pytest.mark.parametrize("where", ["top", "stage"])
def test_max_steps_zero_is_refused_not_run_as_one_step(tmp_path, tiny_llm, where):
    if where == "top":
        overrides, expected = {"max_steps": 0}, r"max_steps: 0 would train nothing"
    else:
        stage = {"name": "depth", "objectives": ["depth"], "train": {"backbone": 1e-4, "depth_head": 1e-3},
                 "max_steps": 0}
        overrides, expected = {"stages": [stage]}, r"stages\[0\]: max_steps: 0 would train nothing"
    with pytest.raises(ConfigError, match=expected):
        load_recipe("multitask").main(["--config", str(tiny_run_config(tmp_path, tiny_llm, **overrides))])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["summary.json", "config.yaml", "config.resume-1.yaml", "final", "run.json"])
def test_a_stage_named_like_a_file_of_the_run_is_refused(tmp_path, tiny_llm, name):
    stage = {"name": name, "objectives": ["depth"], "train": {"depth_head": 1e-3}}
    with pytest.raises(ConfigError, match=rf"stages\[0\]\.name: expected a folder name .* not one of the run's own "
                                          rf"files or folders .*got '{name}'"):
        load_recipe("multitask").main(["--config", str(tiny_run_config(tmp_path, tiny_llm, stages=[stage]))])


def test_a_stage_that_freezes_every_part_is_refused_before_the_run_is_recorded(tmp_path, tiny_llm):
    stage = {"name": "frozen", "objectives": ["depth"], "train": {"backbone": "frozen"}}
    config = tiny_run_config(tmp_path, tiny_llm, tasks=["depth"], stages=[stage], num_eval_scenes=0)
    recipe = load_recipe("multitask")
    with pytest.raises(ConfigError, match=r"stage 'frozen': every part is frozen \(backbone: frozen, depth_head: "
                                          r"frozen\), so it would train nothing"):
        recipe.main(["--config", str(config)])
    assert not (tmp_path / "run" / "config.yaml").exists()
    stage["train"] = {"depth_head": 1e-3}  # the corrected rerun is not refused as "a run"
    summary = recipe.main(["--config", str(tiny_run_config(tmp_path, tiny_llm, tasks=["depth"], stages=[stage],
                                                              num_eval_scenes=0, max_steps=1, panel_samples=0,
                                                              report_to="none", save_strategy="no"))])
    assert summary["stages"]["frozen"]["steps"] == 1
    release_output_dir(tmp_path / "run")


# ------------------------------------------------------------------------------- resumable conversions
LLAVA = [{"id": name, "image": "astronaut.png", "conversations": [
    {"from": "human", "value": f"<image> Who is {name}?"}, {"from": "gpt", "value": f"{name}."}]} for name in "abcde"]


def test_a_conversion_resumed_with_other_settings_or_inputs_is_refused(tmp_path, photos):
    (tmp_path / "llava.json").write_text(json.dumps(LLAVA))
    (tmp_path / "other.json").write_text(json.dumps(LLAVA[:2]))
    out = tmp_path / "out"
    convert = load_recipe("convert_conversations")
    args = ["--format", "llava", "--images", str(photos), "--output_dir", str(out)]
    first = convert.main([*args, "--input", str(tmp_path / "llava.json"), "--shard_size", "2"])
    assert first["labelled"] == 5 and first["shards"] == 3
    (out / "shard-00001" / "DONE").unlink()  # interrupted after shard 0: shards 1 and 2 not done
    (out / "shard-00002" / "DONE").unlink()
    with pytest.raises(OutputFolderError, match=r"holds a labelling run of other inputs or settings "
                                                r"\(shard_size: 2 -> 3\)"):
        convert.main([*args, "--input", str(tmp_path / "llava.json"), "--shard_size", "3"])
    with pytest.raises(OutputFolderError, match=r"items: 5 -> 2; items_sha256: .*settings.input: '.*llava.json' -> "
                                                r"'.*other.json'"):
        convert.main([*args, "--input", str(tmp_path / "other.json"), "--shard_size", "2"])
    resumed = convert.main([*args, "--input", str(tmp_path / "llava.json"), "--shard_size", "2"])
    assert resumed["labelled"] == 5 and resumed["shards_resumed"] == 1
    release_output_dir(out)


def test_image_paths_that_leave_the_image_folder_are_skipped_never_read(tmp_path, photos):
    import shutil

    from versavit_trainer.data.labelling import load_labelled

    images = tmp_path / "images"
    shutil.copytree(photos, images)
    shutil.copy(images / "astronaut.png", tmp_path / "secret.png")  # beside the folder: never to be read
    (images / "linked.png").symlink_to(tmp_path / "secret.png")  # a link the user made in the folder: read
    samples = [{**LLAVA[0], "image": "astronaut.png"}, {**LLAVA[1], "image": "../secret.png"},
               {**LLAVA[2], "image": str(tmp_path / "secret.png")}, {**LLAVA[3], "image": "kitchen/../astronaut.png"},
               {**LLAVA[4], "image": "linked.png"}]
    (tmp_path / "llava.json").write_text(json.dumps(samples))
    summary = load_recipe("convert_conversations").main([
        "--format", "llava", "--input", str(tmp_path / "llava.json"), "--images", str(images),
        "--output_dir", str(tmp_path / "out")])
    assert summary["labelled"] == 3 and summary["skipped: image path outside the image folder"] == 2
    assert sorted(load_labelled(tmp_path / "out")["source"]) == ["astronaut.png", "kitchen/../astronaut.png",
                                                                 "linked.png"]
    release_output_dir(tmp_path / "out")


def test_embedding_a_dataset_into_its_own_folder_is_refused(tmp_path):
    from datasets import Dataset

    folder = tmp_path / "refs"
    Dataset.from_dict({"expressions": [["the cat"]]}).save_to_disk(str(folder))
    files = sorted(p.name for p in folder.iterdir())
    with pytest.raises(OutputFolderError, match=r"refs holds files that no run of this library wrote \(.*state.json"):
        load_recipe("embed_texts").main(["--input_dir", str(folder), "--output_dir", str(folder), "--device", "cpu"])
    assert sorted(p.name for p in folder.iterdir() if p.name not in (".versavit.lock",)) == files
    release_output_dir(folder)


KILLED_CONVERSION = """
import os, signal, sys
from datasets import Features, Value
from versavit_trainer.data.labelling import run_sharded

def label(batch):
    if 4 in batch:  # in shard 1 (items 3, 4, 5), after item 3
        os.kill(os.getpid(), signal.SIGKILL)
    return [{"item": i, "square": i * i} for i in batch]

run_sharded(list(range(8)), label, sys.argv[1], Features({"item": Value("int64"), "square": Value("int64")}),
            shard_size=3, batch_size=1, description="squares", settings={"power": 2})
"""


def test_a_conversion_killed_mid_shard_resumes_to_the_uninterrupted_output(tmp_path, capsys):
    from datasets import Features, Value

    from versavit_trainer.data.labelling import load_labelled, run_sharded

    def convert(out, power=2):
        return run_sharded(list(range(8)), lambda batch: [{"item": i, "square": i * i} for i in batch], out,
                           Features({"item": Value("int64"), "square": Value("int64")}), shard_size=3, batch_size=1,
                           description="squares", settings={"power": power})

    (tmp_path / "convert.py").write_text(KILLED_CONVERSION)
    killed = subprocess.run([sys.executable, str(tmp_path / "convert.py"), str(tmp_path / "resumed")], cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "resumed" / "shard-00000" / "DONE").is_file()
    assert not (tmp_path / "resumed" / "shard-00001").exists()  # a shard is all done or not done
    with pytest.raises(OutputFolderError, match=r"holds a labelling run of other inputs or settings "
                                                r"\(settings.power: 2 -> 3\)"):
        convert(tmp_path / "resumed", power=3)
    assert convert(tmp_path / "resumed")["shards_resumed"] == 1
    convert(tmp_path / "whole")
    whole, resumed = load_labelled(tmp_path / "whole"), load_labelled(tmp_path / "resumed")
    assert resumed.to_list() == whole.to_list() == [{"item": i, "square": i * i} for i in range(8)]
    for folder in ("resumed", "whole"):
        release_output_dir(tmp_path / folder)


# ------------------------------------------------------------------------------------------- GRIT spans
def test_grit_spans_with_bad_coordinates_are_skipped_and_counted_never_clamped(capsys):
    from collections import Counter

    objects_of = load_recipe("convert_grit").objects_of
    row = {"key": "000", "caption": "a cat on a mat", "width": 100, "height": 50, "ref_exps": [
        [0, 5, 0.1, 0.1, 0.5, 0.9, 0.9],
        [0, 5, float("nan"), 0.1, 0.5, 0.9, 0.9],
        [0, 5, -0.5, 0.1, 0.5, 0.9, 0.9],
        [0, 5, 0.1, 0.1, 1.7, 0.9, 0.9],
        [0, 5, "0.1", 0.1, 0.5, 0.9, 0.9],
        [0, "x", 0.1, 0.1, 0.5, 0.9, 0.9],
    ]}
    counts = Counter()
    objects = objects_of(row, "ref_exps", 0.0, counts)
    assert objects == [{"box": [10.0, 5.0, 50.0, 45.0], "text": "a cat"}]
    assert counts == {"skipped spans: coordinates that are not finite numbers": 3,
                      "skipped spans: coordinates outside [0, 1]": 2}
    printed = capsys.readouterr().out
    assert "row '000', span [0, 5, nan, 0.1, 0.5, 0.9, 0.9]" in printed
    assert "coordinates outside [0, 1] (first: row '000', span [0, 5, -0.5," in printed
