# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Evaluation of trained towers and MLLMs: frozen-encoder linear probes (`probes`), QA accuracy (`qa`), retrieval,
correspondence and the other out-of-task measures, LLM layer probes, and the proving ground (`proving_ground` with its
tables, runs, measurements and reports: `ground_*`; the VisPer-LM table: `visper_ground`). The metrics themselves are
`versavit_trainer.metrics`."""
