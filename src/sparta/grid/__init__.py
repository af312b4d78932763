"""The smart-grid case study: sparse agents controlling the batteries of CityLearn's buildings.

* :mod:`sparta.grid.env`: :class:`~sparta.grid.env.GridEnv`, CityLearn 3.0.2 as a PettingZoo ``ParallelEnv`` (one
  agent per building, normalised observations, CityLearn's KPIs at the end of an episode), on the 2022 challenge
  data shipped with sparta.
* :mod:`sparta.grid.sac`: sparse SAC (from :mod:`sparta.rl.sac`) for every building, one network shared by all
  buildings or one per building; training with checkpoints at episode ends and exact resume.
* :mod:`sparta.grid.baselines`: CityLearn's own controllers (no control, rule-based).
* :mod:`sparta.grid.cli`, :mod:`sparta.grid.report`: ``sparta grid train|eval|report``.

CityLearn and PettingZoo are optional (``pip install -e ".[grid]" && pip install --no-deps citylearn==3.0.2``);
importing this package needs neither.
"""
