"""Preset `mec`: the batched core (``core``), its reference policies (``baselines``), episodes
with per-task records and their metrics (``evaluation``) and its side of the preset protocol
(``preset``)."""
