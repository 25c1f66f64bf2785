import pandas as pd
from aefheight import tables


def _metrics(seeds=(0,)):
    rows = []
    for seed in seeds:
        for m in ("unet", "ridge"):
            for i, split in enumerate(("test", "train", "val")):
                rows.append(
                    {
                        "model": m,
                        "seed": seed,
                        "split": split,
                        "n": 1000,
                        "r2": 0.9 - i / 10 + seed / 100,
                        "rmse_m": 10.0 + seed,
                        "median_diff_m": -2.5,
                        "le90_m": 15.0,
                    }
                )
    return pd.DataFrame(rows)


def test_one_row_per_model_and_split_in_paper_order():
    t = tables.metrics_table(_metrics())
    assert list(zip(t["model"], t["split"], strict=True)) == [
        ("U-Net", "train"),
        ("U-Net", "val"),
        ("U-Net", "test"),
        ("Ridge", "train"),
        ("Ridge", "val"),
        ("Ridge", "test"),
    ]
    assert list(t.columns[:6]) == ["model", "split", "seeds", "N", "R²", "RMSE (m)"]
    assert t.loc[0, "RMSE (m)"] == "10.00"


def test_seeds_are_aggregated_as_mean_and_sd():
    t = tables.metrics_table(_metrics(seeds=(0, 2)))
    assert (t["seeds"] == 2).all()
    assert t.loc[0, "RMSE (m)"] == "11.00 ± 1.41"


def test_markdown_escapes_pipes_and_latex_uses_booktabs():
    t = tables.metrics_table(_metrics().assign(abs_p68_m=1.0))
    md = tables.to_markdown(t, tables.NOTE)
    header = md.splitlines()[0]
    assert "\\|dh\\| 68.3%" in header
    assert header.count(" | ") == len(t.columns) - 1  # escaped pipes do not split cells
    tex = tables.to_latex(t, "cap", "tab:x")
    for word in (r"\toprule", r"\midrule", r"\bottomrule", r"\label{tab:x}", r"R$^2$"):
        assert word in tex
    assert "%" not in tex.replace(r"\%", "")


def test_training_summary_counts_epochs():
    h = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "val_loss": [0.5, 0.2, 0.3],
            "val_rmse_m": [9.0, 5.0, 6.0],
            "seconds": [1.0, 1.0, 1.5],
        }
    )
    s = tables.training_summary({("unet", "0"): h})
    assert s.iloc[0].to_dict() == {
        "model": "unet",
        "seed": "0",
        "epochs_run": 3,
        "best_epoch": 2,
        "best_val_rmse_m": 5.0,
        "train_seconds": 3.5,
    }
