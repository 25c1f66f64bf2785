"""train: fitting the nets (resumable) and the Ridge baselines on the split's train pixels."""
