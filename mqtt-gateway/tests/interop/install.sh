#!/usr/bin/env bash
# Installs the real MQTT clients the interop tests run against the gateway:
# Debian's mosquitto-clients (mosquitto_pub / mosquitto_sub), the mosquitto broker (bridge test)
# and Python's paho-mqtt (PyPI).
# Idempotent: does nothing when both are present. Needs root for apt-get.
set -euo pipefail
# mosquitto (the broker) is started by the bridge test on a loopback port of its own.
if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null \
   || ! command -v mosquitto >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
fi
PY=${PYTHON:-python3}
if ! "$PY" -c 'import paho.mqtt' 2>/dev/null; then
  "$PY" -m pip install --quiet 'paho-mqtt>=2,<3' 2>/dev/null \
    || "$PY" -m pip install --quiet --break-system-packages 'paho-mqtt>=2,<3'
fi
(mosquitto_pub --help || true) | sed -n 2p
"$PY" -c 'import paho.mqtt; print("paho-mqtt", paho.mqtt.__version__)'
