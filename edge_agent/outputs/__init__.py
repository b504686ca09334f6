"""Where events go: the alert outputs (log, sound, command, GPIO), the journal on the device, and
MQTT telemetry through the durable spool. Each has its own thread: none can delay the frame."""
