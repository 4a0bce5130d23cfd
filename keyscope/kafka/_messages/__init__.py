"""Kafka protocol message schemas kafka-python 3.0 does not ship (loaded by :mod:`keyscope.kafka.members`).

Written from the Kafka protocol's published message definitions, fields only.
"""
