"""Two embedding products of one area side by side (config ``compare_products``).

Use it to ask *which* embedding maps height best: the two AOIs hold the same area with two
products (AEF and TESSERA, or AEF int8 and its float export), trained and scored on the same
split with the same seeds, so each model's test metrics pair by seed. The table gives every
model's ``mean ± SD`` and per-seed values under each product; the comparison is the second
product minus the first with its 95 % t-interval and a verdict sentence, the same machinery as
the architecture comparison (:func:`aefheight.report.tables.comparisons`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aefheight.core.errors import RasterError
from aefheight.core.files import atomic_path
from aefheight.core.names import model_label
from aefheight.core.raster import Grid, open_raster, read_checked
from aefheight.core.steps import step
from aefheight.report.findings import rst_table
from aefheight.report.tables import COMPARED, cell, paired_difference, to_markdown, verdict


def check_same_split(split_a: Path, split_b: Path) -> None:
    """Stop unless the two split rasters are the same grid and the same labels, block by block.

    Products with other nodata keep other patches, so their splits can differ: then their
    metrics would not count the same pixels and no pairing would be fair.
    """
    with open_raster(split_a, bands=1) as a, open_raster(split_b, bands=1) as b:
        if Grid.of(a) != Grid.of(b):
            raise RasterError(f"{split_a} and {split_b} lie on different grids")
        for _, win in a.block_windows(1):
            if not np.array_equal(read_checked(a, win), read_checked(b, win)):
                raise RasterError(
                    f"{split_a} and {split_b} differ (the products' nodata kept other patches):"
                    " products are compared on one split; lower tiling.min_valid_fraction or "
                    "give both AOIs the same coverage"
                )


def _test_rows(metrics: pd.DataFrame, product: str) -> pd.DataFrame:
    """The test rows of the seeds (not the seed ensembles), labelled with the product's AOI."""
    m = metrics[(metrics["split"] == "test") & (metrics["seed"] >= 0)]
    return m.assign(product=product)


def product_table(
    metrics_a: pd.DataFrame, metrics_b: pd.DataFrame, a: str, b: str, models: list[str]
) -> pd.DataFrame:
    """One row per model and product: test R² and RMSE ``mean ± SD`` and their per-seed values."""
    both = pd.concat([_test_rows(metrics_a, a), _test_rows(metrics_b, b)], ignore_index=True)
    rows = []
    for model in models:
        for product in (a, b):
            g = both[(both["model"] == model) & (both["product"] == product)].sort_values("seed")
            if g.empty:
                continue
            row = {"model": model_label(model), "embeddings": product, "seeds": len(g)}
            for metric, (label, _, dec) in COMPARED.items():
                row[f"test {label}"] = cell(g[metric], dec)
                row[f"test {label} per seed"] = " / ".join(f"{v:.{dec}f}" for v in g[metric])
            rows.append(row)
    return pd.DataFrame(rows)


def product_comparisons(
    metrics_a: pd.DataFrame, metrics_b: pd.DataFrame, a: str, b: str, models: list[str]
) -> pd.DataFrame:
    """Each model's test metrics on ``b`` minus on ``a``, paired by seed, with verdicts."""
    ta, tb = _test_rows(metrics_a, a), _test_rows(metrics_b, b)
    rows = []
    for model in [m for m in models if m in set(ta["model"]) & set(tb["model"])]:
        for metric in COMPARED:
            va = ta[ta["model"] == model].set_index("seed")[metric]
            vb = tb[tb["model"] == model].set_index("seed")[metric]
            diff = paired_difference(vb, va)
            label = model_label(model)
            rows.append(
                {"model": model, "embeddings": b, "versus": a, "split": "test", "metric": metric}
                | diff
                | {"verdict": verdict(f"{label} on {b}", f"{label} on {a}", metric, diff)}
            )
    return pd.DataFrame(rows)


def findings(table: pd.DataFrame, comp: pd.DataFrame, a: str, b: str) -> str:
    """The report's section: the verdict sentences on R² first, then the table."""
    title = f"Embedding products: {b} vs {a}"
    r2 = comp[comp["metric"] == "r2"]
    lines = [title, "-" * len(title), ""]
    lines += [f"* {v}" for v in r2["verdict"]] or ["* No model was trained on both products."]
    lines += ["", rst_table(table, "Test metrics per product (mean ± SD, per-seed values)")]
    return "\n".join(lines) + "\n"


@step
def compare_products(
    *,
    names: list[str],
    models: list[str],
    metrics: list[Path],
    splits: list[Path],
    comparisons: Path,
    md: Path,
    findings_rst: Path,
) -> None:
    """Compare two embedding products of one area: ``names``, ``metrics``, ``splits`` in pairs.

    Args:
        names: The two AOIs (first, second): the second minus the first.
        models: The models that read the embeddings (the coarse DEM is the same under both).
        metrics: Their metrics tables (``metrics.csv``), in the same order.
        splits: Their split rasters, which must be identical.
        comparisons: Written: the paired differences with their intervals and verdicts (CSV).
        md: Written: the table and the verdicts (Markdown).
        findings_rst: Written: the report's section.
    """
    a, b = names
    check_same_split(*splits)
    ma, mb = (pd.read_csv(p) for p in metrics)
    table = product_table(ma, mb, a, b, models)
    comp = product_comparisons(ma, mb, a, b, models)
    with atomic_path(comparisons) as tmp:
        comp.to_csv(tmp, index=False)
    text = to_markdown(table) + "\n" + "\n".join(f"- {v}" for v in comp["verdict"]) + "\n"
    for path, body in ((md, text), (findings_rst, findings(table, comp, a, b))):
        with atomic_path(path) as tmp:
            Path(tmp).write_text(body, encoding="utf-8")
