"""transformers' common model tests (`ModelTesterMixin`, see tests/upstream.py) over the VersaViT backbone and its
dense task models, with a model tester that makes valid packed inputs, as transformers' vision models are tested.

Every skip names its reason; they are the ones transformers' own packed-token vision towers (Qwen2-VL, Qwen2.5-VL)
take, for the same reasons. The eager-vs-SDPA common test is not collected (see below).
"""

import unittest

import torch
from conftest import TINY_HEADS, VISION_CONFIGS
from upstream import load_common

from modeling_versavit import (
    VersaViTConfig,
    VersaViTForDepthEstimation,
    VersaViTForImageTextRetrieval,
    VersaViTForReferringSegmentation,
    VersaViTModel,
)

common = load_common()
ModelTesterMixin = common.ModelTesterMixin


class VersaViTModelTester:
    """Tiny configs and packed inputs: `batch_size` images of `grid` patches each, in the image processor's layout."""

    # One image per batch: the common tests read `seq_length` both as the length of `hidden_states` (packed over the
    # batch) and of each image's attention maps, which agree for one image. tests/test_modeling.py covers batches of
    # several images (of several sizes) against one-image runs, and the attention maps of such batches.
    def __init__(self, parent, family="qwen2_vl", batch_size=1, grid=(4, 4), expressions_per_image=2, depth=2):
        self.parent = parent
        self.family = family
        self.batch_size = batch_size
        self.grid = grid
        self.expressions_per_image = expressions_per_image
        depth_key = "depth" if "depth" in VISION_CONFIGS[family] else "num_hidden_layers"
        self.vision_config = {**VISION_CONFIGS[family], depth_key: depth}
        vision = self.vision_config
        self.num_hidden_layers = depth
        self.num_attention_heads = vision.get("num_heads", vision.get("num_attention_heads"))
        self.hidden_size = vision.get("embed_dim", vision["hidden_size"])
        # Attention maps are per image: `N` tokens attend to the same image's `N` tokens.
        self.seq_length = grid[0] * grid[1]
        self.is_training = True
        # What an exported graph is compared on (a task model's loss needs labels, which export drops).
        self.export_output_keys = ()

    def get_config(self) -> VersaViTConfig:
        return VersaViTConfig(vision_config=dict(self.vision_config), retrieval_embed_dim=16, retrieval_pooling_heads=4,
                              **TINY_HEADS)

    def inputs(self, config, grid, seed=0) -> dict:
        generator = torch.Generator().manual_seed(seed)
        image_grid_thw = torch.tensor([[1, *grid]] * self.batch_size)
        count = self.batch_size * grid[0] * grid[1]
        inputs = {
            "pixel_values": torch.randn(count, config.patch_dim, generator=generator),
            "image_grid_thw": image_grid_thw,
        }
        if self.with_text == "expressions":
            inputs["text_embeds"] = torch.randn(
                self.batch_size, self.expressions_per_image, config.text_embed_dim, generator=generator
            )
        elif self.with_text == "captions":
            inputs["text_embeds"] = torch.randn(self.batch_size, config.retrieval_text_embed_dim, generator=generator)
        return inputs

    with_text = None  # "expressions" (referring segmentation) or "captions" (retrieval)

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        return config, self.inputs(config, self.grid)

    def prepare_export_inputs(self, size_step: int = 1) -> dict:
        """Inputs of another image size (each side `size_step` merge blocks larger), for dynamic-shape exports."""
        config = self.get_config()
        step = size_step * config.spatial_merge_size
        return self.inputs(config, (self.grid[0] + step, self.grid[1] + 2 * step), seed=1)


# transformers' common tests of what a vision tower does not have: token embeddings to resize or feed as
# `inputs_embeds`, a causal-LM or seq2seq head, mixture-of-experts routing, a tensor-parallel plan, a cache, sliding
# windows, RoPE scaling, modules kept in fp32, checkpoint key conversions, a language sub-model. Each skips itself for
# every class here; they are not collected (tests/conftest.py) rather than reported as ~150 skips.
NOT_APPLICABLE = {
    "test_bc_cache_name_forward", "test_model_rope_with_partial_rotation", "test_vision_axial_rope",
    "test_model_rope_scaling_frequencies", "test_output_router_logits_from_config",
    "test_moe_models_record_router_logits", "test_tp_plan_matches_params", "test_sliding_window_mask",
    "test_sdpa_can_dispatch_composite_models", "test_inputs_embeds",
    "test_resize_embeddings_untied_no_reinit_on_post_init", "test_resize_embeddings_untied",
    "test_resize_tokens_embeddings", "test_resize_position_vector_embeddings",
    "test_causal_lm_loss_honors_shift_labels", "test_encoder_decoder_loss_no_double_shift",
    "test_keep_in_fp32_modules_strict_also_hardcode_fp32", "test_keep_in_fp32_modules",
    "test_keep_in_fp32_modules_exist",
    "test_can_load_from_already_mapped_keys", "test_reverse_loading_mapping",
}


class VersaViTCommonTests(ModelTesterMixin):
    """The settings transformers' packed vision towers use, with their reasons."""

    family = "qwen2_vl"
    # A vision tower: no token embeddings to resize; `get_input_embeddings` is the patch embedding (a Conv3d-held
    # matmul), which transformers' vision models also exclude from resizing.
    test_resize_embeddings = False
    # Composite config: the tower's transformers config is a sub-config (`vision_config`), as for Qwen2-VL.
    _is_composite = True

    def setUp(self):
        self.model_tester = VersaViTModelTester(self, family=self.family)
        self.model_tester.with_text = {
            VersaViTForReferringSegmentation: "expressions", VersaViTForImageTextRetrieval: "captions"
        }.get(self.all_model_classes[0])
        self.model_tester.export_output_keys = self.export_output_keys

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """Labels of the task models, as their training data has them: relative depth at the processed input size,
        binary masks per expression."""
        inputs = super()._prepare_for_class(inputs_dict, model_class, return_labels=False)
        if return_labels and model_class in (VersaViTForDepthEstimation, VersaViTForReferringSegmentation):
            config = self.model_tester.get_config()
            height, width = (side * config.patch_size for side in self.model_tester.grid)
            generator = torch.Generator().manual_seed(2)
            if model_class is VersaViTForDepthEstimation:
                inputs["labels"] = torch.rand(self.model_tester.batch_size, height, width, generator=generator) + 0.1
            else:
                count = inputs["text_embeds"].shape[:2].numel()
                inputs["labels"] = (torch.rand(count, height, width, generator=generator) > 0.5).float()
        return inputs

    def test_model_get_set_embeddings(self):
        """Vision models' form of the common test (as transformers' ViT tests have it): the input embeddings are the
        patch embedding, a module that is not an `nn.Embedding`; there are no output embeddings."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIs(model.get_input_embeddings(), model.config.backbone.patch_embedding(model.visual))
            self.assertIsInstance(model.get_input_embeddings(), torch.nn.Module)
            self.assertIsNone(model.get_output_embeddings())

    def test_model_weights_reload_no_missing_tied_weights(self):
        """VersaViT's form of the common test, which loads a folder whose weights are all gone and expects a load
        report: VersaViT refuses a checkpoint that lacks tower tensors (a tower partly at random is not the
        checkpoint's), naming how many. With the tower there, the parts it lacks are reported missing, exactly."""
        import tempfile

        from safetensors.torch import save_file

        for model_class in self.all_model_classes:
            config, _ = self.model_tester.prepare_config_and_inputs_for_common()
            model = model_class(config)
            state = {name: tensor.clone().contiguous() for name, tensor in model.state_dict().items()}
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder)
                save_file({"tensor": torch.tensor([1, 2])}, f"{folder}/model.safetensors", metadata={"format": "pt"})
                with self.assertRaisesRegex(ValueError, r"the checkpoint lacks \d+ of the vision tower's \d+ tensors"):
                    model_class.from_pretrained(folder)
                save_file({k: v for k, v in state.items() if k.startswith("visual.")}, f"{folder}/model.safetensors",
                          metadata={"format": "pt"})
                _, info = model_class.from_pretrained(folder, output_loading_info=True)
                self.assertEqual(set(info["missing_keys"]), {k for k in state if not k.startswith("visual.")})



# Not collected at all (25 variants x 9 classes that could only be skipped): transformers' eager-vs-SDPA common test
# pads every listed input to 7 rows of random values, which cannot make a valid packed batch (`image_grid_thw` rows
# must describe the `pixel_values` rows). tests/test_modeling.py `test_eager_and_sdpa_attention_agree` compares eager
# and SDPA on valid packed inputs of every Qwen tower family.
for _name in [name for name in dir(ModelTesterMixin) if name.startswith("test_eager_matches_sdpa_inference")]:
    setattr(VersaViTCommonTests, _name, None)


class VersaViTModelTest(VersaViTCommonTests, unittest.TestCase):
    all_model_classes = (VersaViTModel,)
    export_output_keys = ("last_hidden_state", "pooler_output")

    @unittest.skip(
        "A base model has no loss. The common test leaves out the base models transformers knows "
        "(MODEL_MAPPING_NAMES), a list of built-in classes that cannot name a remote-code model."
    )
    def test_training(self):
        pass

    @unittest.skip("A base model has no loss (see test_training); the task models' testers run gradient checkpointing.")
    def test_training_gradient_checkpointing(self):
        pass

    @unittest.skip("A base model has no loss (see test_training); the task models' testers run gradient checkpointing.")
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        pass

    @unittest.skip("A base model has no loss (see test_training); the task models' testers run gradient checkpointing.")
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass


class VersaViTModelQwen25Test(VersaViTModelTest):
    family = "qwen2_5_vl"


class VersaViTModelQwen3VLTest(VersaViTModelTest):
    family = "qwen3_vl"


class VersaViTModelQwen35Test(VersaViTModelTest):
    family = "qwen3_5"


class VersaViTModelSiglip2Test(VersaViTModelTest):
    family = "siglip2"

    @unittest.skip(
        "The weights this test names (SigLIP2's Linear and Embedding layers) come out of transformers' own "
        "Siglip2PreTrainedModel._init_weights differently when the tower is built inside VersaViTModel.__init__ and "
        "when it is initialised from the meta device: only the random init differs, loaded weights are unaffected."
    )
    def test_can_init_all_missing_weights(self):
        pass

    @unittest.skip(
        "SigLIP2 attends over a padded batch in raster order; its maps are those weights reordered into the packed "
        "rows' 2x2-block order, a copy that gradients do not flow back into (the Qwen towers' one-image maps are the "
        "weights themselves). tests/test_modeling.py checks the maps against transformers' eager SigLIP2."
    )
    def test_retain_grad_hidden_states_attentions(self):
        pass


class VersaViTModelSiglipTest(VersaViTModelSiglip2Test):
    # SigLIP2's attention-map reason applies: the images are folded back into a batch of whole images.
    family = "siglip"


class VersaViTModelInternViTTest(VersaViTModelSiglip2Test):
    # The whole-image families fold the images back as SigLIP does: SigLIP2's attention-map reason applies.
    family = "internvit"
    export_output_keys = ("last_hidden_state",)  # no pooled output
    test_can_init_all_missing_weights = ModelTesterMixin.test_can_init_all_missing_weights  # (SigLIP2's init only)


class VersaViTModelAimv2Test(VersaViTModelSiglip2Test):
    family = "aimv2"
    test_can_init_all_missing_weights = ModelTesterMixin.test_can_init_all_missing_weights


class VersaViTForDepthEstimationTest(VersaViTCommonTests, unittest.TestCase):
    all_model_classes = (VersaViTForDepthEstimation,)
    export_output_keys = ("predicted_depth",)


class VersaViTForReferringSegmentationTest(VersaViTCommonTests, unittest.TestCase):
    all_model_classes = (VersaViTForReferringSegmentation,)
    export_output_keys = ("pred_masks", "image_embeddings")


class VersaViTForImageTextRetrievalTest(VersaViTCommonTests, unittest.TestCase):
    all_model_classes = (VersaViTForImageTextRetrieval,)
    export_output_keys = ("image_embeds", "text_embeds", "logits_per_image")
