"""Measurement: exact params/MACs (:mod:`.profile`) and latency per runtime (:mod:`.latency`)."""
