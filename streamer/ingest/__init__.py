"""What comes in: records and files turned into the model's windows.

- ``codec``: a Kafka record's bytes to a window (JSON, named or positional, or float32), and
  the dead letter naming what was wrong;
- ``features``: the model's feature names, matched by name against a record's or a file's;
- ``readings``: one reading per step cut into windows per key, as the daemon receives them;
- ``windows``: the sliding-window arithmetic shared by files and readings;
- ``tables``: CSV and Parquet files as windows, for training, scoring, backtests and replay;
- ``build``: the codec and windower a deployment's ``[codec]`` asks for.
"""
