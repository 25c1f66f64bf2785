"""models: one factory for every model (smp nets, the Ridge as a fixed net) and their kinds."""
