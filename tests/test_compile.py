"""The backbone and both dense heads under `torch.compile` (inductor, on the CPU): the same outputs, loss and
gradients as eager mode. Compiling takes ~20 s per model here, so one tower family and small inputs."""

import pytest
import torch
from conftest import random_inputs, tiny_config

from modeling_versavit import VersaViTForDepthEstimation, VersaViTForReferringSegmentation, VersaViTModel
from modeling_versavit.losses_versavit import depth_loss


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_backbone_and_heads_compile_to_the_same_outputs():
    torch.manual_seed(0)
    config = tiny_config("qwen2_vl")
    inputs = random_inputs(config, [(8, 8), (8, 8)])
    text = {"text_embeds": torch.randn(3, config.text_embed_dim), "expression_image_index": torch.tensor([0, 1, 1])}
    cases = [
        (VersaViTModel, {}, ("last_hidden_state", "pooler_output")),
        (VersaViTForDepthEstimation, {}, ("predicted_depth",)),
        (VersaViTForReferringSegmentation, text, ("pred_masks", "image_embeddings")),
    ]
    for model_class, extra, fields in cases:
        model = model_class(config).eval()
        compiled = torch.compile(model)
        with torch.no_grad():
            eager, ours = model(**inputs, **extra), compiled(**inputs, **extra)
        for field in fields:
            assert ours[field].shape == eager[field].shape, (model_class.__name__, field)
            torch.testing.assert_close(
                ours[field], eager[field], rtol=1e-4, atol=1e-5, msg=f"{model_class.__name__}.{field}"
            )


def test_a_compiled_training_step_gives_the_same_loss_and_gradients():
    """Forward + backward of the depth model, and the SSI + gradient-matching loss on its own. The model's gradients
    are compared through a fixed linear read-out of the prediction: through the loss at initialisation, where the
    prediction is nearly constant and the loss divides by its spread, float32 rounding alone moves them by ~1%."""
    torch.manual_seed(0)
    config = tiny_config("qwen2_vl")
    model = VersaViTForDepthEstimation(config).train()
    inputs = random_inputs(config, [(8, 8), (8, 8)])
    labels = torch.rand(2, 8 * 14, 8 * 14) + 0.1
    labels[0, :10] = float("nan")  # holes, as pseudo labels have
    readout = torch.randn(2, 8 * 14, 8 * 14)

    def step(forward):
        model.zero_grad()
        out = forward(**inputs, labels=labels)
        (out.predicted_depth * readout).sum().backward()
        return out.loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    eager_loss, eager_grads = step(model)
    compiled_loss, compiled_grads = step(torch.compile(model))
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-4, atol=1e-6)
    assert compiled_grads.keys() == eager_grads.keys() and len(eager_grads) > 50
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)

    prediction = torch.rand(2, 8 * 14, 8 * 14, requires_grad=True)

    def loss_gradient(loss_fn):
        prediction.grad = None
        loss, _ = loss_fn(prediction, labels)
        loss.backward()
        return loss.detach(), prediction.grad.clone()

    eager = loss_gradient(depth_loss)
    compiled = loss_gradient(torch.compile(depth_loss))
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled[1], eager[1], rtol=1e-4, atol=1e-7)
