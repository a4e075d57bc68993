# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Methods: compositions of objectives and stages. `versavit`: the paper's curriculum (alignment warm-up, then
multi-task training); `finetune`: the short task fine-tuning of a multi-task checkpoint (supplement §9.3 / §9.4)."""
