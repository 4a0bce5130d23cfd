"""Real Apache Kafka for the tests: resolved from Maven Central, run in KRaft mode."""

from .cluster import KafkaCluster, kafka_lib_dir

__all__ = ["KafkaCluster", "kafka_lib_dir"]
