"""The end-to-end demo: a generated labelled feed, the real commands as child processes, and the
score of their alerts against the injected anomalies."""
