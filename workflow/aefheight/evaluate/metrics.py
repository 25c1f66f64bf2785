"""Streaming accuracy metrics of a predicted height raster against the reference DSM.

Rasters are read block by block into the accumulators of :mod:`.stats` (one job, or one job
per shard whose partial statistics :func:`reduce_partials` folds in block order: the same
numbers). Spearman's rho needs ranks, so it is computed on the uniform random pixel sample
(its size is reported).

About 420 lines: one evaluation and its sharded twin (partials, merge, reduce) share the
accumulators' layout; kept together so the two cannot drift apart.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window
from scipy import stats as sps

from aefheight.core.errors import NoValidData
from aefheight.core.files import atomic_path, write_csv
from aefheight.core.names import CODES, SPLITS
from aefheight.core.raster import (
    Grid,
    check_same_grid,
    open_raster,
    read_checked,
    read_dsm_block,
)
from aefheight.core.steps import step
from aefheight.evaluate.stats import (
    BLOCK_FIELDS,
    DIFF_CONVENTION,
    HEIGHT_BIN,
    HIST_BINS,
    METRIC_COLUMNS,
    BinnedErrors,
    DiffStats,
    Evaluation,
    SeamCheck,
    block_stats,
    diff_hist,
)
from aefheight.inputs.shards import BLOCK_PX, ShardingSettings, shard_of

log = logging.getLogger(__name__)


@dataclass
class _Tally:
    """The statistics :func:`reduce_partials` folds from the blocks, per split."""

    stats: dict[str, DiffStats] = field(default_factory=lambda: {k: DiffStats() for k in SPLITS})
    by_h: dict[str, BinnedErrors] = field(
        default_factory=lambda: {k: BinnedErrors() for k in SPLITS}
    )
    by_c: dict[str, BinnedErrors] = field(
        default_factory=lambda: {k: BinnedErrors() for k in SPLITS}
    )


@dataclass
class _Partials:
    """What each evaluation block adds, kept apart so that shards merge in one fixed order.

    Rows of ``binned_h``/``binned_c``: block row, block column, split, key, n, sum dh,
    sum dh^2; of ``samples``: block row, block column, split, reference, prediction.
    """

    blocks: list[tuple[int, int]] = field(default_factory=list)
    diff: list[np.ndarray] = field(default_factory=list)  # (splits, 1 + BLOCK_FIELDS)
    binned_h: list[np.ndarray] = field(default_factory=list)
    binned_c: list[np.ndarray] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)
    hist: np.ndarray = field(default_factory=lambda: np.zeros((len(SPLITS), HIST_BINS), np.int64))

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays (what :func:`write_partials` saves)."""

        def rows(parts: list[np.ndarray], n: int) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros((0, n))

        return {
            "blocks": np.array(self.blocks, np.int64).reshape(-1, 2),
            "diff": np.array(self.diff).reshape(-1, len(SPLITS), 1 + len(BLOCK_FIELDS)),
            "binned_h": rows(self.binned_h, 7),
            "binned_c": rows(self.binned_c, 7),
            "samples": rows(self.samples, 5),
            "hist": self.hist,
        }


def _binned_rows(key: tuple[int, int, int], keys: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Rows (block, split, key, n, sum dh, sum dh^2) of one block and split (keys ascending)."""
    uniq, inv = np.unique(keys, return_inverse=True)
    sums = [np.bincount(inv, minlength=uniq.size), np.bincount(inv, weights=d, minlength=uniq.size)]
    sums.append(np.bincount(inv, weights=d * d, minlength=uniq.size))
    head = np.broadcast_to(np.array(key, np.float64), (uniq.size, 3))
    return np.column_stack([head, uniq, *sums])


def _add_block(
    out: _Partials,
    key: tuple[int, int],
    pixels: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray],
    height_bin: float,
) -> None:
    """Add one block: reference, prediction, validity, split labels, classes, sample picks."""
    ref, pred, ok, lab, cls, pick = pixels
    diff = np.zeros((len(SPLITS), 1 + len(BLOCK_FIELDS)))
    for i, name in enumerate(SPLITS):
        area = lab == CODES[name]
        m = ok & area
        r, p = ref[m], pred[m]
        diff[i] = (int(area.sum()), *block_stats(r, p))
        if r.size == 0:
            continue
        out.hist[i] += diff_hist(r, p)
        d = p.astype(np.float64) - r
        out.binned_h.append(_binned_rows((*key, i), np.floor(r / height_bin).astype(np.int64), d))
        if cls is not None:
            out.binned_c.append(_binned_rows((*key, i), cls[m].astype(np.int64), d))
        sm = m & pick
        if sm.any():
            head = np.broadcast_to(np.array((*key, i), np.float64), (int(sm.sum()), 3))
            out.samples.append(np.column_stack([head, ref[sm], pred[sm]]))
    out.blocks.append(key)
    out.diff.append(diff)


def _metrics_table(tally: _Tally, sample: pd.DataFrame) -> pd.DataFrame:
    """One row per split: the accuracy metrics and the Spearman rank correlation (sample)."""
    rows = []
    for k in SPLITS:
        row = {"split": k, **tally.stats[k].result()}
        sub = sample[sample["split"] == k]
        row["spearman_rho"] = (
            float(sps.spearmanr(sub["reference"], sub["prediction"])[0])
            if len(sub) > 2
            else float("nan")
        )
        row["spearman_n"] = len(sub)
        rows.append(row)
    metrics = pd.DataFrame(rows)[["split", *METRIC_COLUMNS]]
    metrics["diff_convention"] = DIFF_CONVENTION
    return metrics


def _binned_tables(
    tally: _Tally, height_bin: float, names: dict[str, str] | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Errors per reference-height bin and per land-cover class (empty without classes)."""
    hs, cs = [], []
    for k in SPLITS:
        t = tally.by_h[k].table()
        t.insert(0, "split", k)
        t.insert(1, "height_lo_m", t.pop("key") * height_bin)
        t.insert(2, "height_hi_m", t["height_lo_m"] + height_bin)
        hs.append(t)
    for k in SPLITS:
        t = tally.by_c[k].table().rename(columns={"key": "class"})
        t.insert(0, "split", k)
        labels = [names.get(str(c), str(c)) for c in t["class"]] if names is not None else []
        t.insert(2, "class_name", labels)
        cs.append(t)
    return pd.concat(hs, ignore_index=True), pd.concat(cs, ignore_index=True)


def _class_names(lc: rasterio.io.DatasetReader) -> dict[str, str]:
    """Land-cover code -> name, from the raster's ``classes`` tag (``1:forest,2:urban``)."""
    return dict(kv.split(":", 1) for kv in lc.tags().get("classes", "").split(",") if kv)


def _blocks(window: Window) -> list[tuple[tuple[int, int], Window]]:
    """The evaluation blocks of ``window``, as ((block row, block column), window), row by row.

    Whole :data:`~aefheight.inputs.shards.BLOCK_PX` blocks of the AOI's grid, clipped at its edges.
    """
    (r0, r1), (c0, c1) = window.toranges()
    return [
        ((r // BLOCK_PX, c // BLOCK_PX), Window(c, r, min(BLOCK_PX, c1 - c), min(BLOCK_PX, r1 - r)))
        for r in range(r0, r1, BLOCK_PX)
        for c in range(c0, c1, BLOCK_PX)
    ]


def evaluate_partials(
    pred_path: Path,
    dsm_path: Path,
    split_path: Path,
    landcover_path: Path | None = None,
    window: Window | None = None,
    max_samples: int = 200_000,
    seed: int = 0,
    height_bin: float = HEIGHT_BIN,
) -> dict[str, np.ndarray]:
    """What every evaluation block of ``window`` (a shard; None = the AOI) adds to the metrics.

    :func:`reduce_partials` turns them into the metrics; blocks from several shards fold into
    exactly the metrics of the whole AOI, since blocks fold in one fixed order whoever computed
    them. Each block draws its sample pixels from its own seeded stream, for the same reason.
    """
    out = _Partials()
    with (
        open_raster(pred_path, bands=1) as pr,
        open_raster(dsm_path, bands=1) as dm,
        open_raster(split_path, bands=1) as sp,
        contextlib.ExitStack() as stack,
    ):
        lc = stack.enter_context(open_raster(landcover_path, 1)) if landcover_path else None
        grid = Grid.of(pr)
        for other in (dm, sp, *([lc] if lc is not None else [])):
            check_same_grid(grid, Grid.of(other), pr.name, other.name)
        keep = min(1.0, max_samples / (grid.width * grid.height))
        seams = SeamCheck(pr.tags(), grid.height, grid.width)
        for key, win in _blocks(window or Window(0, 0, grid.width, grid.height)):
            pred = read_checked(pr, win, indexes=1)
            ref = read_dsm_block(dm, win)
            lab = read_checked(sp, win, indexes=1)
            cls = read_checked(lc, win, indexes=1) if lc is not None else None
            ok = (pred != pr.nodata) & np.isfinite(pred) & np.isfinite(ref)
            pick = np.random.default_rng([seed, *key]).random(ref.shape) < keep
            seams.add(win, ok, pred.astype(np.float64) - ref)
            _add_block(out, key, (ref, pred, ok, lab, cls, pick), height_bin)
        about = {"tags": pr.tags(), "shape": [grid.height, grid.width], "pred": str(pred_path)}
        seam_profiles = {"seam_x": seams.along_x, "seam_y": seams.along_y}
        about["classes"] = _class_names(lc) if lc is not None else None
    return out.arrays() | seam_profiles | {"about": np.array(json.dumps(about, sort_keys=True))}


def write_partials(parts: dict[str, np.ndarray], path: Path) -> None:
    """Save one shard's partial statistics (``.npz``), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, allow_pickle=False, **parts)


SUMMED = ("hist", "seam_x", "seam_y")  # integer partials: shards add up in any order


def merge_partials(paths: Sequence[Path]) -> dict[str, np.ndarray]:
    """The partial statistics of several shards of one prediction, as one."""
    loaded = []
    for path in paths:
        with np.load(path, allow_pickle=False) as z:
            loaded.append({k: z[k] for k in z.files})
    abouts = {str(p["about"]) for p in loaded}
    if len(abouts) != 1:
        raise NoValidData(f"{', '.join(map(str, paths))} do not come from one prediction")
    out = {
        k: np.concatenate([p[k] for p in loaded]) for k in loaded[0] if k not in (*SUMMED, "about")
    }
    return out | {k: sum(p[k] for p in loaded) for k in SUMMED} | {"about": loaded[0]["about"]}


def _stable_by_block(rows: np.ndarray) -> np.ndarray:
    """``rows`` (block row, block column first) sorted by block, keeping their order within."""
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))] if len(rows) else rows


def reduce_partials(parts: dict[str, np.ndarray], height_bin: float = HEIGHT_BIN) -> Evaluation:
    """Metrics per split, stratified errors, seams and the sample, from the blocks' partials.

    Blocks are folded in row-major order of the AOI's block grid, so the result does not
    depend on how the blocks were shared out among shards.
    """
    about = json.loads(str(parts["about"]))
    tally = _Tally()
    seams = SeamCheck(about["tags"], *about["shape"])
    seams.along_x, seams.along_y = parts["seam_x"], parts["seam_y"]
    for b in np.lexsort((parts["blocks"][:, 1], parts["blocks"][:, 0])):
        for i, name in enumerate(SPLITS):
            tally.stats[name].n_total += int(parts["diff"][b, i, 0])
            tally.stats[name].merge(parts["diff"][b, i, 1:])
    for i, name in enumerate(SPLITS):
        tally.stats[name].hist = parts["hist"][i]
    for kind, binned in (("binned_h", tally.by_h), ("binned_c", tally.by_c)):
        for _, _, i, key, n, s1, s2 in _stable_by_block(parts[kind]):
            acc = binned[SPLITS[int(i)]].sums.setdefault(int(key), np.zeros(3))
            acc += (n, s1, s2)
    if all(st.n == 0 for st in tally.stats.values()):
        raise NoValidData(f"no pixel where both {about['pred']} and the reference DSM are valid")
    rows = _stable_by_block(parts["samples"])
    sample = pd.DataFrame(
        {
            "split": np.array(SPLITS, dtype=object)[rows[:, 2].astype(np.int64)],
            "reference": rows[:, 3].astype(np.float32),
            "prediction": rows[:, 4].astype(np.float32),
        }
    )
    by_height, by_class = _binned_tables(tally, height_bin, about["classes"])
    return Evaluation(_metrics_table(tally, sample), sample, by_height, by_class, seams.table())


def evaluate_prediction(
    pred_path: Path,
    dsm_path: Path,
    split_path: Path,
    landcover_path: Path | None = None,
    max_samples: int = 200_000,
    seed: int = 0,
    height_bin: float = HEIGHT_BIN,
) -> Evaluation:
    """Metrics per split (train, val, test), stratified errors and a random pixel sample.

    Streams the rasters block by block (memory flat in the AOI size); pixels of the split's
    buffer and unused labels enter no metric. The same as evaluating every shard of a
    sharded AOI and merging (:func:`evaluate_partials`, :func:`merge_partials`).
    """
    parts = evaluate_partials(
        pred_path, dsm_path, split_path, landcover_path, None, max_samples, seed, height_bin
    )
    return reduce_partials(parts, height_bin)


def write_evaluation(
    prediction: Path,
    dsm: Path,
    split: Path,
    landcover: Path | None,
    model: str,
    seed: int,
    outputs: dict[str, Path],
) -> Evaluation:
    """The ``evaluate`` rule: evaluate one prediction and write its five tables.

    ``outputs`` names the CSVs: ``metrics``, ``samples``, ``by_height``, ``by_class``,
    ``seams``. Every table carries the ``model`` and ``seed`` it belongs to.
    """
    draw = max(seed, 0)  # a seed ensemble's seed is -1: it samples pixels as seed 0 does
    return _write_evaluation_tables(
        evaluate_prediction(prediction, dsm, split, landcover, seed=draw), model, seed, outputs
    )


def write_merged_evaluation(
    partials: Sequence[Path], model: str, seed: int, outputs: dict[str, Path]
) -> Evaluation:
    """The ``merge_evaluation`` rule: ``evaluate``'s five tables from the shards' partials.

    Each shard's ``evaluate_shard`` job wrote them (:func:`evaluate_partials`); the tables are
    byte for byte those of the unsharded ``evaluate`` rule.
    """
    return _write_evaluation_tables(reduce_partials(merge_partials(partials)), model, seed, outputs)


def _write_evaluation_tables(
    ev: Evaluation, model: str, seed: int, outputs: dict[str, Path]
) -> Evaluation:
    tables = {
        "metrics": ev.metrics,
        "samples": ev.sample,
        "by_height": ev.by_height,
        "by_class": ev.by_class,
        "seams": ev.seams,
    }
    for name, df in tables.items():
        df.insert(0, "seed", seed)
        df.insert(0, "model", model)
        write_csv(df, outputs[name])
    return ev


@step
def evaluate(
    *,
    model: str,
    seed: int,
    prediction: Path,
    dsm: Path,
    split: Path,
    metrics: Path,
    samples: Path,
    by_height: Path,
    by_class: Path,
    seams: Path,
    landcover: Path | None = None,
) -> None:
    """Score one prediction per split: metrics, samples, errors by height and class, seams."""
    outputs = dict(metrics=metrics, samples=samples, by_height=by_height, by_class=by_class)
    write_evaluation(prediction, dsm, split, landcover, model, seed, {**outputs, "seams": seams})


@step
def evaluate_shard(
    *,
    sharding: ShardingSettings,
    seed: int,
    shard: str,
    prediction: Path,
    dsm: Path,
    split: Path,
    partials: Path,
    landcover: Path | None = None,
) -> None:
    """Write the partial statistics of one prediction in one shard (``merge-evaluation``)."""
    window = shard_of(prediction, shard, sharding)
    parts = evaluate_partials(prediction, dsm, split, landcover, window, seed=seed)
    write_partials(parts, partials)


@step
def merge_evaluation(
    *,
    model: str,
    seed: int,
    partials: list[Path],
    metrics: Path,
    samples: Path,
    by_height: Path,
    by_class: Path,
    seams: Path,
) -> None:
    """Write ``evaluate``'s five tables of one prediction from its shards' statistics."""
    outputs = dict(metrics=metrics, samples=samples, by_height=by_height, by_class=by_class)
    write_merged_evaluation(partials, model, seed, {**outputs, "seams": seams})
