# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The training core: `MultiTaskTrainer` (`trainer`), the model it trains (`objectives_model`), the interleaved
schedule (`schedule`), stage curricula (`curriculum`) and running them (`stages`), LoRA (`lora`), a run's options
(`options`), its model (`models`), its datasets (`sources`), its held-out evaluation (`held_out`), what it will cost
(`plan`) and what it shows (`reporting`)."""
