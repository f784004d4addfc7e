"""The feature cache: each image is embedded once."""

import numpy as np
import torch
from PIL import Image

from fedmedclip.feature_cache import FeatureCache


def test_feature_cache_encodes_each_image_once(tmp_path):
    from fedmedclip.backbone import load_backbone

    paths = []
    rng = np.random.default_rng(0)
    for i in range(5):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    backbone = load_backbone("ViT-S-32", None)
    cache = FeatureCache(tmp_path / "cache")
    first = cache.encode_files(backbone, paths, batch_size=2)
    assert backbone.encoded_images == 5 and cache.misses == 5
    second = cache.encode_files(backbone, paths)
    assert backbone.encoded_images == 5, "a second pass must not call the encoder"
    assert cache.hits == 5
    assert torch.allclose(first, second)
    assert torch.allclose(first.norm(dim=-1), torch.ones(5), atol=1e-5)
