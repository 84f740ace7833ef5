"""The streaming path: sources, stages (detect, track, recognise), tracker, voter, the thread runner, output,
metrics."""
