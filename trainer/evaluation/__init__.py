# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Evaluation: metrics (`metrics`), the held-out evaluation of a run (`held_out`) and frozen-encoder linear probes
(`probes`)."""
