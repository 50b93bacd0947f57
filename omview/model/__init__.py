"""L0 shared model and wire protocol: stdlib only, imported by every other layer."""
