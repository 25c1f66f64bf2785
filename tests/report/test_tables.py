import pandas as pd
from aefheight.report import tables


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
    assert t.loc[0, "RMSE (m)"] == "11.00 ± 1.41"  # per-seed values: their own table


def test_a_failed_fit_is_named_beside_the_mean_and_kept_per_seed():
    m = _metrics(seeds=(0, 1, 2))
    bad = (m["seed"] == 1) & (m["model"] == "unet")
    m.loc[bad & (m["split"] == "train"), "r2"] = 0.2  # below the Ridge's train R² (~0.8)
    failed = tables.failed_fits(m, ["unet"], "ridge")
    assert failed.set_index("seed")["failed_to_fit"].tolist() == [False, True, False]
    head = tables.headline(m, ["unet", "ridge"], failed).set_index("model")
    assert head.loc["U-Net", "failed to fit"] == "1 of 3 (seed 1)"
    assert head.loc["Ridge", "failed to fit"] == "n/a (no training)"
    assert head.loc["U-Net", "train R²"].startswith("0.607 ± ")  # the mean keeps it
    seeds = tables.per_seed(m, ["unet", "ridge"], failed)
    row = seeds[(seeds["model"] == "unet") & (seeds["seed"] == 1)].iloc[0]
    assert row["failed to fit"] and row["train R²"] == 0.2


def test_paired_comparison_interval_and_verdicts():
    from scipy import stats

    a, b = pd.Series([0.80, 0.85, 0.83]), pd.Series([0.70, 0.74, 0.76])
    d = tables.paired_difference(a, b)
    diff = a - b
    half = stats.t.ppf(0.975, 2) * diff.std(ddof=1) / 3**0.5
    assert d["mean_diff"] == diff.mean() and abs(d["ci_high"] - diff.mean() - half) < 1e-12
    assert "is better than" in tables.verdict("unetplusplus", "unet", "r2", d)
    assert "is worse than" in tables.verdict("unetplusplus", "unet", "rmse_m", d)
    wide = tables.paired_difference(pd.Series([0.9, 0.1, 0.5]), pd.Series([0.5, 0.5, 0.5]))
    assert "not resolved at 3 seeds" in tables.verdict("unet", "ridge", "r2", wide)
    one = tables.paired_difference(pd.Series([0.9]), pd.Series([0.5]))
    assert "not resolved at 1 seed " in tables.verdict("unet", "ridge", "r2", one)


def test_comparisons_pair_nets_with_each_other_and_with_every_baseline():
    m = pd.concat([_metrics(seeds=(0, 1)), _metrics(seeds=(0, 1)).assign(model="unetplusplus")])
    m = m.drop_duplicates(["model", "seed", "split"])
    c = tables.comparisons(m, ["unet", "unetplusplus"], ["ridge"])
    pairs = set(zip(c["model"], c["versus"], strict=True))
    assert pairs == {("unetplusplus", "unet"), ("unet", "ridge"), ("unetplusplus", "ridge")}
    assert set(c["metric"]) == {"r2", "rmse_m"} and (c["n_seeds"] == 2).all()


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


def test_training_summary_counts_epochs_steps_and_the_cap():
    h = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "steps": [4, 8, 12],
            "val_loss": [0.5, 0.2, 0.3],
            "val_rmse_m": [9.0, 5.0, 6.0],
            "seconds": [1.0, 1.0, 1.5],
            "model": "unet",
            "seed": 0,
            "stopped": "max_epochs",
        }
    )
    s = tables.training_summary([h, h.assign(seed=1, stopped="early_stopping")], 3)
    assert s.iloc[0].to_dict() == {
        "model": "unet",
        "seed": 0,
        "epochs_run": 3,
        "max_epochs": 3,
        "best_epoch": 2,
        "steps": 12,
        "stopped": "cap hit",
        "best_val_rmse_m": 5.0,
        "train_seconds": 3.5,
    }
    assert s.iloc[1]["stopped"] == "early stopping"


def test_an_ensemble_row_counts_its_model_s_seeds_and_is_no_failed_fit():
    rows = [
        {"model": m, "seed": s, "split": k, "r2": 0.5, "rmse_m": 1.0, "median_diff_m": 0.0}
        for m, seeds in (("unet", (0, 1, 2)), ("unet_ensemble", (-1,)))
        for s in seeds
        for k in ("train", "test")
    ]
    failed = pd.DataFrame(columns=["model", "seed", "failed_to_fit"])
    row = tables.headline(pd.DataFrame(rows), ["unet_ensemble"], failed).iloc[0]
    assert row["model"] == "U-Net, mean of the seeds" and row["seeds"] == 3
    assert row["failed to fit"] == "n/a (an ensemble)"
