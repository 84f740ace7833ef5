"""The reel benchmark (`python -m bench.reel`): decisions over time, scored frame by frame.

cast.py (who: unseen LFW people, enrolled or strangers, their face boxes) -> plan.py (the shots) -> build.py
(the video and its ground truth) -> scenes.py (the scenarios, read back from the truth); facestream.py and
peer.py run the two systems; score.py (with assignment.py) turns their boxes into the metrics.
"""
