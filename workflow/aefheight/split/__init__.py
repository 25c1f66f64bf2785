"""split: the spatial train/val/test split of the AOI's pixels, and its k-fold strips."""
