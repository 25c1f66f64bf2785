"""Random training windows: drawn inside the training area, assembled from the stored patches."""

import numpy as np
import pytest
from aefheight.core import aef
from aefheight.tiles.store import PatchStore
from aefheight.train.dataset import PatchDataset, draw_windows, window_pieces

P = 8


@pytest.fixture
def grid_store(tmp_path):
    """A 4 x 5 grid of 8 px patches cut from known rasters; patch (1, 2) is not a train patch."""
    rng = np.random.default_rng(0)
    codes = rng.integers(-127, 128, (aef.BANDS, 4 * P, 5 * P)).astype(np.int8)
    dsm = rng.normal(100, 10, (4 * P, 5 * P)).astype(np.float32)
    origins = np.array([(r * P, c * P) for r in range(4) for c in range(5)], np.int64)
    emb = np.stack([codes[:, r : r + P, c : c + P] for r, c in origins])
    z = np.stack([dsm[r : r + P, c : c + P] for r, c in origins])
    np.save(tmp_path / "e.npy", emb)
    np.save(tmp_path / "z.npy", z)
    train = np.array([i for i in range(20) if i != 7])  # 7 = row 1, column 2
    masks = np.ones((len(train), P, P), bool)
    store = PatchStore(tmp_path / "e.npy", tmp_path / "z.npy")
    return store, codes, dsm, origins[train], train, masks


def test_pieces_tile_the_window_exactly():
    for dy, dx in ((0, 0), (3, 5), (7, 1)):
        cover = np.zeros((P, P), int)
        for _, _, dst in window_pieces(dy, dx, P):
            cover[dst] += 1
        assert (cover == 1).all()


def test_windows_are_the_rasters_at_their_offset_and_nodata_off_the_train_patches(grid_store):
    store, codes, dsm, origins, train, masks = grid_store
    items = draw_windows(origins, masks, 200, 0.5, np.random.default_rng(1))
    ds = PatchDataset(store, train, 0.0, 1.0, masks).with_windows(items)
    got_codes, _, y, mask = ds.__getitems__(list(range(len(items))))
    padded_c = np.pad(codes, ((0, 0), (0, P), (0, P)), constant_values=aef.NODATA)
    padded_z = np.pad(dsm, ((0, P), (0, P)), constant_values=np.nan)
    offsets = set()
    for w, item in enumerate(items):
        r, c = origins[item[0]] + item[4:6]
        offsets.add((int(item[4]), int(item[5])))
        rows, cols = np.mgrid[r : r + P, c : c + P]
        on_train = ~((rows // P == 1) & (cols // P == 2))  # the left-out patch
        ok = on_train & (rows < 4 * P) & (cols < 5 * P)
        m = mask[w, 0].numpy()
        assert (m == ok).all()
        win_c = padded_c[:, r : r + P, c : c + P]
        np.testing.assert_array_equal(got_codes[w].numpy()[:, m], win_c[:, m])
        np.testing.assert_allclose(y[w, 0].numpy()[m], padded_z[r : r + P, c : c + P][m])
        assert (got_codes[w].numpy()[:, ~m] == aef.NODATA).all()
        assert m.mean() >= 0.5  # drawn inside the training area
    assert len(offsets) > 40  # of the 64 offsets: windows anywhere, not on the patch grid


def test_windows_follow_the_generator_and_redraw_below_the_valid_fraction(grid_store):
    _, _, _, origins, _, masks = grid_store
    a = draw_windows(origins, masks, 50, 0.9, np.random.default_rng([3, 1]))
    b = draw_windows(origins, masks, 50, 0.9, np.random.default_rng([3, 1]))
    c = draw_windows(origins, masks, 50, 0.9, np.random.default_rng([3, 2]))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for item in a:  # >= 90 % of the window on train patches
        kept = sum(
            masks[item[q]][src].sum()
            for q, src, _ in window_pieces(item[4], item[5], P)
            if item[q] >= 0
        )
        assert kept >= 0.9 * P * P
