"""Soak test: run.py over the looped clips while another process enrols and removes people: `python -m bench.soak`.

`__main__` parses the arguments, drives the run and prints the result; `inputs` names the clips, people and
gallery; `churn` is the enrol/remove process; `run_py` starts and stops run.py; `memory` samples RSS from /proc and
judges it flat or not; `report` checks events and errors and builds the JSON; `plot` draws RSS over time.
"""
