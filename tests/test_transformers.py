"""Transformers: the automatic CAM layer of ViT/DeiT-style models, Swin's grids, Hugging Face outputs.

Models are built from configs with random weights (no download). References: pytorch-grad-cam on the same
weights at the same layer, with the ``reshape_transform`` its tutorials write for ViTs and Swin.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import salwidget as sw
from salwidget.errors import SaliencyError

from .test_cam import CAMS, ToyViT, close, grad_cam_lib, half_pixel_upsampling  # noqa: F401  (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore:.*no positive evidence:UserWarning")
REFERENCES = {"gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "layercam": "LayerCAM", "scorecam": "ScoreCAM"}


@pytest.fixture(scope="module")
def transformers():
    """transformers, imported without the torchvision stub pytorch-grad-cam's import needs (transformers probes
    for torchvision, and a stub without a module spec breaks the probe)."""
    stub = sys.modules.get("torchvision")
    if stub is not None and getattr(stub, "__spec__", None) is None:
        sys.modules.pop("torchvision")
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


@pytest.fixture
def pictures():
    return np.random.default_rng(7).uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)


def hf_vit(transformers, family: str = "ViT", **extra):
    torch.manual_seed(0)
    config = getattr(transformers, f"{family}Config")(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=4, **extra)
    return getattr(transformers, f"{family}ForImageClassification")(config).eval()


def hf_swin(transformers):
    torch.manual_seed(0)
    config = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                     window_size=4, num_labels=4)
    return transformers.SwinForImageClassification(config).eval()


class Logits(torch.nn.Module):
    """A Hugging Face classifier returning its logits tensor, as pytorch-grad-cam needs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).logits


def tokens_to_grid(prefix: int, size: int):
    """pytorch-grad-cam's ViT reshape_transform: drop the prefix tokens, fold (B, h, w, C), move C first."""

    def reshape(tensor):
        grid = tensor[:, prefix:, :].reshape(tensor.size(0), size, size, tensor.size(2))
        return grid.transpose(2, 3).transpose(1, 2)

    return reshape


def reference(lib, method, model, layer, x, targets, **kwargs):
    import copy

    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    wrapped = Logits(copy.deepcopy(model)) if hasattr(model, "config") else copy.deepcopy(model)  # Hugging Face
    name = f"model.{layer}" if isinstance(wrapped, Logits) else layer
    with getattr(lib, REFERENCES[method])(model=wrapped, target_layers=[dict(wrapped.named_modules())[name]],
                                          **kwargs) as cam:
        return cam(input_tensor=torch.as_tensor(x), targets=[ClassifierOutputTarget(int(t)) for t in targets])


def last_named(model, suffix: str) -> str:
    return [name for name, _ in model.named_modules() if name.endswith(suffix)][-1]


# ----------------------------------------------------------------- ViT-style
@pytest.mark.parametrize("family, prefix", [("ViT", 1), ("DeiT", 2)])
def test_hugging_face_vit_cams_read_the_last_blocks_input_norm(transformers, pictures, grad_cam_lib, family, prefix):
    model = hf_vit(transformers, family)
    a = sw.attribute(model, pictures, "gradcam")
    assert a.layer == last_named(model, "layernorm_before") and a.layer.startswith(f"{family.lower()}.")
    assert a.raw.shape == (2, 4, 4) and a.raw.max() > 0
    close(a.raw, reference(grad_cam_lib, "gradcam", model, a.layer, pictures, a.target,
                           reshape_transform=tokens_to_grid(prefix, 4)))


def test_a_plain_vit_cam_reads_the_last_blocks_norm1(pictures, grad_cam_lib):
    images = pictures[:, :, :16, :16]
    model = ToyViT().eval()
    a = sw.attribute(model, images, "gradcam")
    assert a.layer == "blocks.1.norm1" and a.raw.max() > 0
    close(a.raw, reference(grad_cam_lib, "gradcam", model, "blocks.1.norm1", images, a.target,
                           reshape_transform=tokens_to_grid(1, 4)))


# ----------------------------------------------------------------- Swin
@pytest.mark.parametrize("method", CAMS)
def test_every_cam_works_on_a_hugging_face_swin_as_pytorch_grad_cam_with_its_swin_reshape(
        transformers, pictures, grad_cam_lib, half_pixel_upsampling, method):
    model = hf_swin(transformers)
    a = sw.attribute(model, pictures, method, target=[1, 3])
    assert a.layer == "swin.layernorm" and a.raw.shape == (2, 4, 4)
    close(a.raw, reference(grad_cam_lib, method, model, a.layer, pictures, [1, 3],
                           reshape_transform=tokens_to_grid(0, 4)))


class ChannelsLastBlocks(torch.nn.Module):
    """A torch model whose blocks keep (B, h, w, C), as timm's Swin stages do."""

    def __init__(self, dim: int = 8, classes: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.patch = torch.nn.Conv2d(3, dim, 4, stride=4)
        self.norm, self.mlp = torch.nn.LayerNorm(dim), torch.nn.Linear(dim, dim)
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, x):
        grid = self.patch(x).permute(0, 2, 3, 1)  # (B, h, w, C)
        return self.head(torch.tanh(self.mlp(self.norm(grid))).mean((1, 2)))


def test_torch_channels_last_maps_are_read_as_grids(pictures, grad_cam_lib):
    images = pictures[:, :, :16, :16]
    model = ChannelsLastBlocks().eval()
    a = sw.attribute(model, images, "gradcam")
    assert a.layer == "mlp" and a.raw.shape == (2, 4, 4)
    close(a.raw, reference(grad_cam_lib, "gradcam", model, "mlp", images, a.target,
                           reshape_transform=lambda t: t.permute(0, 3, 1, 2)))


@pytest.mark.parametrize("layer, message", [
    ("attention", r"outputs shape \(8, 16, 16\) for 2 image\(s\): its first axis is not the images"),
    ("swin.pooler", r"outputs 32 tokens \(shape \(2, 32, 1\)\)"),
    ("classifier", r"outputs shape \(2, 4\); a CAM needs a feature map"),
])
def test_a_layer_that_is_no_grid_names_one_that_is(transformers, pictures, layer, message):
    model = hf_swin(transformers)
    if layer == "attention":  # the first attention projection, on 4 windows per image (named by the version)
        layer = next(n for n, m in model.named_modules() if "attention" in n and isinstance(m, torch.nn.Linear))
    with pytest.raises(SaliencyError, match=message + r".*try layer='swin.layernorm'"):
        sw.attribute(model, pictures, "gradcam", layer=layer)


# ----------------------------------------------------------------- outputs
def test_hugging_face_outputs_are_chosen_by_name(transformers, pictures):
    model = hf_vit(transformers, output_hidden_states=True)  # logits and a tuple of hidden states
    with pytest.raises(SaliencyError, match=r"returns 4 outputs.*0: 'logits' \(2, 4\), 1: 'hidden_states.0' "
                                            r"\(2, 17, 32\)"):
        sw.attribute(model, pictures, "vanilla")
    with pytest.raises(SaliencyError, match=r"Did you mean output='logits'\?"):
        sw.attribute(model, pictures, "vanilla", output="logit")
    a = sw.attribute(model, pictures, "vanilla", output="logits")
    plain = sw.attribute(hf_vit(transformers), pictures, "vanilla")
    np.testing.assert_allclose(a.raw, plain.raw, rtol=1e-5, atol=1e-9)
    assert a.output_name == "logits" and a.scores.shape == (2, 4)
    embedding = sw.attribute(model, pictures, "vanilla", output="hidden_states.2",
                             target=sw.targets.Similarity(np.ones((17, 32), np.float32)))
    assert embedding.raw.shape == pictures.shape and np.abs(embedding.raw).max() > 0


# ----------------------------------------------------------------- a branch that feeds only the training loss
def hf_upernet(transformers, auxiliary: bool):
    torch.manual_seed(0)
    backbone = transformers.ConvNextConfig(out_features=["stage1", "stage2", "stage3", "stage4"],
                                           hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])
    config = transformers.UperNetConfig(backbone_config=backbone, hidden_size=16, auxiliary_channels=8, num_labels=3,
                                        use_auxiliary_head=auxiliary)
    model = transformers.UperNetForSemanticSegmentation(config).eval()
    return model


def test_the_automatic_layer_of_upernet_is_on_the_path_to_the_explained_output(transformers):
    # UperNet runs its auxiliary_head last, but it feeds only the training loss: the automatic layer used to
    # be that head, and the call failed telling the user to remove .detach().
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 64, 64)).astype(np.float32)
    model, plain = hf_upernet(transformers, True), hf_upernet(transformers, False)
    plain.load_state_dict(model.state_dict(), strict=False)  # the same network without the training branch
    predicted = sw.outputs.predicted_masks(sw.predict(model, x, output="logits"))[0]
    k = int(np.bincount(predicted.ravel()).argmax())
    region = sw.targets.Region(k, predicted == k)  # the largest predicted region, as the panel explains
    with_head = sw.attribute(model, x, "gradcam", target=region, output="logits")
    without = sw.attribute(plain, x, "gradcam", target=region, output="logits")
    assert with_head.layer == without.layer == "decode_head"
    np.testing.assert_allclose(with_head.raw, without.raw, rtol=1e-5, atol=1e-7)
    assert with_head.raw.max() > 0
