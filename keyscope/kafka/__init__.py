"""Every contact with Kafka (kafka-python, the wire, the embedded broker)."""
