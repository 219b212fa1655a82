"""Preset `paper`: the batched core (``core``), its reference rules (``baselines``), the
hindsight bound (``bound``) and its side of the preset protocol (``preset``)."""
