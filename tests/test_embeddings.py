"""Embeddings: final-layer features, PCA and t-SNE (scikit-learn's), the thumbnail map, and
`explain.py embeddings` with its W&B table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import explain as explain_cli
from camlight.inspect.embeddings import features, reduce, thumbnail_map
from camlight.modules import Classifier

pytest.importorskip("sklearn", reason="embeddings need the 'inspect' extra")


def test_features_are_the_last_linear_layers_input():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 32, 32)
    gap = Classifier("simple_cnn", "gap", image_size=32, width=4).train()
    feats, logits = features(gap, x)
    gap.eval()
    with torch.no_grad():
        torch.testing.assert_close(feats, gap.features(x).mean((2, 3)))
        torch.testing.assert_close(logits, gap(x))
    gap.train()
    _ = features(gap, x)
    assert gap.training and all(not m._forward_hooks for m in gap.modules())
    fc = Classifier("simple_cnn", "fc", image_size=32, width=4, fc_hidden=8)
    assert features(fc, x)[0].shape == (3, 8)  # the FC head's hidden layer


def test_pca_is_the_top_two_principal_axes_and_tsne_keeps_clusters_apart():
    g = np.random.default_rng(0)
    a = g.normal(0, 1, (60, 10)) + np.r_[6.0, np.zeros(9)]
    b = g.normal(0, 1, (60, 10)) - np.r_[6.0, np.zeros(9)]
    x = np.concatenate([a, b]).astype(np.float32)
    pca = reduce(x, "pca")
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(pca), np.abs(centred @ vt[:2].T), atol=1e-3)
    tsne = reduce(x, "tsne")
    assert np.array_equal(tsne, reduce(x, "tsne"))  # seeded: the same map twice
    # Each point's nearest neighbour in the map is from its own cluster.
    d = ((tsne[:, None] - tsne[None]) ** 2).sum(-1) + np.eye(120) * 1e9
    labels = np.r_[np.zeros(60), np.ones(60)]
    assert (labels[d.argmin(1)] == labels).all()
    with pytest.raises(ValueError, match="pca or tsne"):
        reduce(x, "umap")


def test_thumbnail_map_places_each_image_in_its_own_cell():
    """Cells as in the scatter plot (x right, y up); an image whose cell is taken goes to the
    nearest free one."""
    images = torch.stack([torch.full((3, 4, 4), v) for v in (0.0, 0.25, 0.5, 0.75)])
    coords = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])  # the third collides with the first
    canvas = thumbnail_map(images, coords, side=48, spread=3.0)  # √12 → 4 cells of 12 px a side
    assert canvas.shape == (3, 48, 48)
    assert (canvas[:, 36:, :12] == 0.0).all()  # (0, 0): bottom left
    assert (canvas[:, :12, 36:] == 0.25).all()  # (1, 1): top right
    assert (canvas[:, 24:36, :12] == 0.5).all()  # taken: the cell above
    assert (canvas[:, 36:, 36:] == 0.75).all()  # (1, 0): bottom right
    assert (canvas == 1.0).sum() == 3 * (48 * 48 - 4 * 144)  # the rest white


@pytest.fixture(scope="module")
def trained(tiny_checkpoint):
    return tiny_checkpoint


def test_embeddings_command_writes_the_maps_and_the_wandb_table(trained, tmp_path, capsys):
    out = tmp_path / "e"
    args = ["embeddings", f"checkpoint={trained}", f"out={out}", "batch_size=10", "map_side=128"]
    assert explain_cli.main([*args, "wandb.mode=offline", "trainer.enable_progress_bar=false"]) == 0
    names = {p.name for p in out.iterdir()}
    assert names >= {"embeddings.csv", "features.npy", "pca.png", "tsne.png", "thumbnails_pca.png", "run.json"}
    with open(out / "embeddings.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(32))  # the whole split, in order
    model = Classifier.load_from_checkpoint(trained, map_location="cpu")
    from camlight.datamodules import SyntheticPets

    dm = SyntheticPets(
        image_size=48, train_size=64, val_size=32, test_size=0, mean=model.hparams.mean, std=model.hparams.std
    )
    x = torch.stack([dm.dataset("val")[i]["image"] for i in range(32)])
    np.testing.assert_allclose(np.load(out / "features.npy"), features(model, x)[0].numpy(), atol=1e-5)
    from PIL import Image

    # 32 images: √(3·32) → 10 cells a side of 128 // 10 = 12 px.
    assert Image.open(out / "thumbnails_tsne.png").size == (120, 120)
    about = json.loads((out / "run.json").read_text())
    assert about["images"] == 32 and set(about["seconds"]) == {"pca", "tsne"}
    tables = list(out.glob("wandb/offline-run-*/files/media/table/embeddings/*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["image", "label", "predicted", "embedding"] and len(table["data"]) == 32
    assert len(table["data"][0][3]) == features(model, x)[0].shape[1]
    never = tmp_path / "never"
    capsys.readouterr()
    assert explain_cli.main(["embeddings", f"checkpoint={trained}", "methods=[umap]", f"out={never}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pca, tsne" in err[0] and not never.exists()
