"""Run a script with accelerate's FSDP on the CPU, for the two-process tests on machines without a GPU.

    accelerate launch --config_file recipes/accelerate/fsdp2.yaml tests/fsdp_on_cpu.py SCRIPT [ARGS...]

accelerate turns FSDP on only for accelerator devices: on a CPU-only machine its state says MULTI_CPU (plain DDP over
gloo) even when the launcher asked for FSDP. PyTorch's `fully_shard` itself runs on the CPU with gloo, so this shim
sets the state to FSDP with the launcher's plugin (from the environment) once accelerate has built it; everything
after that (the Trainer's `is_fsdp_enabled`, `fsdp2_prepare_model`, state-dict gathering) is accelerate's own code.
"""

import runpy
import sys

from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

_init = Accelerator.__init__


def _init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    if fsdp_plugin is None:
        fsdp_plugin = FullyShardedDataParallelPlugin()  # the launcher's settings (FSDP_* environment variables)
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    state = AcceleratorState()
    if state.distributed_type == DistributedType.MULTI_CPU:
        state.distributed_type = DistributedType.FSDP
        state.fsdp_plugin = fsdp_plugin


Accelerator.__init__ = _init_with_fsdp_on_cpu

if __name__ == "__main__":
    script, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
