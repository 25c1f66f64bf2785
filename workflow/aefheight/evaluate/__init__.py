"""evaluate: streaming metrics per split, the height-distribution shift, the AOA."""
