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
