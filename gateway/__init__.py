"""LinkLoop's gateway: one share link per product, a closed loop into WeCom."""

__all__: list[str] = []
