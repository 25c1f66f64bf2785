"""tiles: the AOI cut into the int8 patch store (one per shard) that training memory-maps."""
