"""The embedding explorer's numerics: 2-D projections, density maps, colours."""
