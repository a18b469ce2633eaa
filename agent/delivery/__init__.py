"""Delivery stage: durable outbox -> egress gate -> one MQTT link per destination.

- outbox.py: SQLite (WAL, synchronous=FULL) queues per destination; accept, retention,
  re-check on policy change, size cap.
- gate.py: EgressGate, the only code that lets a read message reach a publisher.
- mqtt_link.py: one paho client per destination with TLS, key pin, backoff.
- service.py: DeliveryService, a sender thread per destination (PUBACK before delete).
- status.py: StatusPublisher, retained status with last will and a heartbeat.
- records.py: the Delivery record, codecs and the plategate.read/1 message.
- soak.py: a harness (fault tests, benchmark): real stack under a signed test policy.

See docs/delivery.md.
"""
