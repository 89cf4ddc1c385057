"""The Kafka edges: topic admin, the group source and its fetch process, sinks, transactions, the
calibrator state store, topic ranges, replays, and the daemon assembled from them."""

from streamer.broker.kafka_python_reads import keep_bytes_read_before_a_close

keep_bytes_read_before_a_close()
