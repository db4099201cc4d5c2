"""Image encoders, the POI-set encoder and external checkpoints with a band map."""

from __future__ import annotations

import pytest
import torch

from landuse.models.encoders import (POISetEncoder, ResNet50, SmallCNN, ViT, load_external_encoder, make_encoder)


@pytest.mark.parametrize("name,kw", [("smallcnn", {"width": 4, "out_dim": 10}),
                                     ("resnet50", {"layers": (1, 1, 1, 1), "width": 4, "small_input": True}),
                                     ("vit", {"image_size": 16, "patch_size": 4, "dim": 16, "depth": 1, "heads": 2})])
def test_encoders_map_patches_to_out_dim(name: str, kw: dict) -> None:
    encoder = make_encoder(name, 7, **kw).eval()
    out = encoder(torch.randn(3, 7, 16, 16))
    assert out.shape == (3, encoder.out_dim)
    with pytest.raises(ValueError, match="expects"):
        encoder(torch.randn(3, 5, 16, 16))


def test_full_resnet50_and_vit_sizes() -> None:
    assert ResNet50(3).out_dim == 2048
    assert sum(p.numel() for p in ResNet50(3).parameters()) == pytest.approx(23.5e6, rel=0.01)  # torchvision: 23.5M without fc
    vit = ViT(4, image_size=16, patch_size=4, dim=16, depth=1, heads=2).eval()
    assert vit(torch.randn(2, 4, 32, 32)).shape == (2, 16)  # interpolated position embeddings
    with pytest.raises(ValueError, match="unknown encoder"):
        make_encoder("alexnet", 3)


@pytest.mark.parametrize("pooling", ["set2set", "attention"])
def test_poi_set_encoder(pooling: str) -> None:
    encoder = POISetEncoder(5, emb_dim=4, out_dim=6, pooling=pooling)
    out = encoder(torch.tensor([0, 1, 4, 2]), torch.tensor([0, 0, 1, 3]), num_sets=4)
    assert out.shape == (4, 6) and torch.isfinite(out).all()
    # permutation of a set's members does not change its vector
    again = encoder(torch.tensor([1, 0, 4, 2]), torch.tensor([0, 0, 1, 3]), num_sets=4)
    assert torch.allclose(out, again, atol=1e-6)


def test_external_checkpoint_with_prefix_and_band_map(tmp_path) -> None:
    torch.manual_seed(0)
    source = SmallCNN(3, width=4, out_dim=5).eval()  # e.g. an RGB checkpoint
    path = tmp_path / "ssl.pt"
    torch.save({"state_dict": {f"module.encoder.{k}": v for k, v in source.state_dict().items()}}, path)
    roles = ["coastal", "blue", "green", "red", "nir", "swir1", "swir2"]
    encoder = load_external_encoder(path, "smallcnn", {0: "red", 1: "green", "2": 1}, in_bands=7,
                                    band_roles=roles, width=4, out_dim=5).eval()
    x = torch.randn(2, 7, 16, 16)
    with torch.no_grad():
        assert torch.allclose(encoder(x), source(x[:, [3, 2, 1]]), atol=1e-6)
    assert encoder.out_dim == 5 and encoder.in_bands == 7


def test_external_resnet_checkpoint_with_head(tmp_path) -> None:
    torch.manual_seed(0)
    source = ResNet50(2, layers=(1, 1, 1, 1), width=4, small_input=True).eval()
    state = {f"module.{k}": v for k, v in source.state_dict().items() if k not in ("band_mean", "band_std")}
    state["module.fc.weight"] = torch.randn(10, source.out_dim)  # a classifier head is dropped
    torch.save(state, tmp_path / "r.pt")
    encoder = load_external_encoder(tmp_path / "r.pt", "resnet50", {0: 4, 1: 0}, in_bands=5,
                                    layers=(1, 1, 1, 1), width=4, small_input=True).eval()
    x = torch.randn(2, 5, 16, 16)
    with torch.no_grad():
        assert torch.allclose(encoder(x), source(x[:, [4, 0]]), atol=1e-5)


def test_bad_external_checkpoints(tmp_path) -> None:
    good = tmp_path / "good.pt"
    torch.save(SmallCNN(3, width=4, out_dim=5).state_dict(), good)
    with pytest.raises(ValueError, match="covers encoder channels"):
        load_external_encoder(good, "smallcnn", {0: 0, 1: 1}, in_bands=3, width=4, out_dim=5)
    with pytest.raises(ValueError, match="has shape"):
        load_external_encoder(good, "smallcnn", {0: 0, 1: 1, 2: 2}, in_bands=3, width=8, out_dim=5)
    with pytest.raises(ValueError, match="not a raster band role"):
        load_external_encoder(good, "smallcnn", {0: "red", 1: 1, 2: 2}, in_bands=3, band_roles=["a", "b", "c"], width=4, out_dim=5)
    with pytest.raises(ValueError, match="outside 0..2"):
        load_external_encoder(good, "smallcnn", {0: 0, 1: 1, 2: 3}, in_bands=3, width=4, out_dim=5)
    with pytest.raises(ValueError, match="not a resnet50 state_dict"):
        load_external_encoder(good, "resnet50", {0: 0, 1: 1, 2: 2}, in_bands=3)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_external_encoder(junk, "smallcnn", {0: 0}, in_bands=3)
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match="not a state_dict"):
        load_external_encoder(tmp_path / "meta.pt", "smallcnn", {0: 0}, in_bands=3)
    with pytest.raises(FileNotFoundError):
        load_external_encoder(tmp_path / "missing.pt", "smallcnn", {0: 0}, in_bands=3)
