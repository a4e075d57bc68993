"""transformers' own common model tests (`ModelTesterMixin`), as every model inside transformers runs them.

They live in the transformers source distribution's `tests/`, not in the wheel. `python tests/upstream.py fetch`
(run by `make install`) downloads the source distribution of the installed transformers version from the package
index and keeps its `tests/test_modeling_common.py` in the virtual environment (`<venv>/transformers-tests/<version>`),
so the tests always match the library they test. Nothing else of the archive is kept.

`test_modeling_common.py` imports two sibling modules that the source distribution does not ship:
`tests/exporters/test_export.py` (the `ExportTesterMixin` that `ModelTesterMixin` extends) and
`tests/generation/test_utils.py` (`GenerationTesterMixin`, which generating models' testers add). They are provided
here: `ExportTesterMixin` exports every tested class with transformers' own `DynamoExporter` (static and dynamic
image sizes) and compares the exported program with eager; `GenerationTesterMixin` is the marker class the common
`test_generation_tester_mixin_inheritance` looks for (no tested VersaViT class generates).
"""

import copy
import importlib
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import torch
import transformers

FOLDER = Path(sys.prefix) / "transformers-tests" / transformers.__version__
FILES = ("tests/test_modeling_common.py",)


def fetch(folder: Path = FOLDER) -> Path:
    """Download the transformers source distribution matching the installed version and keep its common tests."""
    if all((folder / Path(name).name).is_file() for name in FILES):
        return folder
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"transformers=={transformers.__version__}", "--dest", download],
            check=True,
        )
        (archive,) = Path(download).glob("transformers-*.tar.gz")
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            root = tar.getnames()[0].split("/")[0]
            for name in FILES:
                source = tar.extractfile(f"{root}/{name}")
                if source is None:
                    raise FileNotFoundError(f"{archive.name} has no {name}.")
                (folder / Path(name).name).write_bytes(source.read())
    return folder


class ExportTesterMixin:
    """`torch.export` of every tested class through transformers' `DynamoExporter`, the exporter transformers' own
    export tests drive. Eager and exported outputs must agree on the inputs it was traced with and, when exported
    with dynamic shapes, on inputs of another image size (`model_tester.prepare_export_inputs(size_step)`)."""

    test_torch_exportable = True

    def _export_and_compare(self, dynamic: bool):
        from transformers.exporters import DynamoConfig, DynamoExporter

        if not self.test_torch_exportable:
            self.skipTest("test_torch_exportable is False for this model")
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            with self.subTest(model_class.__name__):
                torch.manual_seed(0)
                model = model_class(copy.deepcopy(config)).eval()
                exported = DynamoExporter().export(model, dict(inputs), DynamoConfig(dynamic=dynamic))
                checks = [inputs]
                if dynamic:
                    checks.append(self.model_tester.prepare_export_inputs(size_step=1))
                for check in checks:
                    with torch.no_grad():
                        eager = model(**check)
                    ours = exported(**check)
                    for key in self.model_tester.export_output_keys:
                        torch.testing.assert_close(ours[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)

    def test_torch_export_static(self):
        self._export_and_compare(dynamic=False)

    def test_torch_export_dynamic(self):
        self._export_and_compare(dynamic=True)


class GenerationTesterMixin:
    """Marker for testers of generating models (none here): see `test_generation_tester_mixin_inheritance`."""


def load_common() -> types.ModuleType:
    """`test_modeling_common` of the installed transformers version, with the two sibling modules above."""
    folder = FOLDER
    if not (folder / "test_modeling_common.py").is_file():
        raise FileNotFoundError(
            f"{folder}/test_modeling_common.py is missing: the transformers common tests are fetched by `make install` "
            f"(or run `{sys.executable} tests/upstream.py fetch`)."
        )
    package = types.ModuleType("transformers_common_tests")
    package.__path__ = [str(folder)]
    sys.modules["transformers_common_tests"] = package
    for name, attribute, value in (
        ("exporters", "ExportTesterMixin", ExportTesterMixin),
        ("generation", "GenerationTesterMixin", GenerationTesterMixin),
    ):
        subpackage = types.ModuleType(f"transformers_common_tests.{name}")
        subpackage.__path__ = []
        leaf = "test_export" if name == "exporters" else "test_utils"
        module = types.ModuleType(f"transformers_common_tests.{name}.{leaf}")
        setattr(module, attribute, value)
        sys.modules[subpackage.__name__] = subpackage
        sys.modules[module.__name__] = module
    return importlib.import_module("transformers_common_tests.test_modeling_common")


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        sys.exit(f"usage: {sys.argv[0]} fetch")
    print(f"transformers common tests: {fetch()}")
