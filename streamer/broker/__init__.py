"""The Kafka edges: topic admin, the group source and its fetch process, sinks, transactions, the
calibrator state store, topic ranges, replays, and the daemon assembled from them."""
