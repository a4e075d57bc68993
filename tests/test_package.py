"""The installed package: import names and registration."""

from pathlib import Path

from transformers import AutoConfig, AutoModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

import modeling_versavit


def test_trainer_folder_installs_as_versavit_trainer():
    import versavit_trainer

    assert Path(versavit_trainer.__file__).parent.name == "trainer"
    assert versavit_trainer.__version__ == modeling_versavit.__version__


def test_import_registers_the_auto_classes():
    assert CONFIG_MAPPING["versavit"] is modeling_versavit.VersaViTConfig
    config = AutoConfig.for_model("versavit", vision_config={"model_type": "qwen2_vl_vision", "depth": 1,
                                                             "embed_dim": 16, "num_heads": 2, "hidden_size": 16})
    assert type(AutoModel.from_config(config)) is modeling_versavit.VersaViTModel


def test_the_package_has_no_names_of_the_flat_layout():
    """Before a first release the old module names are gone, not kept as aliases: only the layered names import."""
    import importlib

    import pytest

    for old in ("build", "multitask", "hub", "stages", "schedule", "readers", "probes"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"versavit_trainer.{old}")
    from versavit_trainer.core.models import build_model
    from versavit_trainer.data import DepthCollator
    from versavit_trainer.export import swap_vision_tower
    assert build_model and DepthCollator and swap_vision_tower


def test_the_mutation_run_names_modules_and_tests_that_exist(tmp_path, monkeypatch):
    """`make mutation` (tests/mutation.py) mutates real modules under their import names and runs real tests: its
    scratch folder links each import name to this checkout and writes a mutmut config that lists them."""
    import configparser

    import mutation

    monkeypatch.setattr(mutation, "SCRATCH", tmp_path / "scratch")
    mutation.prepare()
    for module, tests in mutation.MODULES.items():
        assert (tmp_path / "scratch" / module).is_file(), module
        assert all((mutation.ROOT / test).is_file() for test in tests), tests
    assert (tmp_path / "scratch" / "versavit_trainer" / "core" / "schedule.py").resolve() == (
        mutation.ROOT / "trainer" / "core" / "schedule.py")
    config = configparser.ConfigParser()
    config.read(tmp_path / "scratch" / "setup.cfg")
    assert config["mutmut"]["only_mutate"].split() == list(mutation.MODULES)
    assert config["tool:pytest"]["testpaths"] == "tests"
