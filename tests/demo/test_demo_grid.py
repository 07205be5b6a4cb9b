"""`save_grid`: the PNG the demo benchmarks write (README and docs/demo.md figures)."""

import numpy as np
from PIL import Image

from ecad_ray.models.demo import save_grid


def test_grid_places_each_image_upscaled_with_white_gaps(tmp_path):
    rng = np.random.default_rng(0)
    top = rng.integers(0, 200, (3, 4, 5, 3), dtype=np.uint8)  # 3 images of 4 x 5 (H x W)
    bottom = rng.integers(0, 200, (2, 4, 5, 3), dtype=np.uint8)  # a shorter row
    path = save_grid([top, bottom], tmp_path / "sub" / "grid.png", scale=2)

    grid = np.asarray(Image.open(path))
    assert grid.shape == (2 + 2 * (4 * 2 + 2), 2 + 3 * (5 * 2 + 2), 3)
    for r, row in enumerate([top, bottom]):
        for c, img in enumerate(row):
            y, x = 2 + r * 10, 2 + c * 12
            assert np.array_equal(grid[y:y + 8:2, x:x + 10:2], img)  # every 2nd pixel is the source
            assert np.array_equal(grid[y + 1:y + 8:2, x + 1:x + 10:2], img)
    assert (grid[:2] == 255).all() and (grid[:, :2] == 255).all()  # outer gap
    assert (grid[12:, 26:] == 255).all()  # the bottom row's missing third cell stays white
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary left behind
