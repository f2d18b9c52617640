#!/usr/bin/env python3
"""Interop checks of the Ringway MQTT gateway with Eclipse paho-mqtt (2.x).

Usage: paho_check.py HOST PORT SCENARIO PROTOCOL
  SCENARIO: pubsub | retained | will | persistent
  PROTOCOL: 311 | 5
Exits 0 and prints "ok SCENARIO PROTOCOL" when every check holds, 1 otherwise.
"""
import queue
import socket
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 10.0


def fail(msg):
    print("FAIL:", msg, flush=True)
    sys.exit(1)


class Client:
    def __init__(self, host, port, proto, client_id=None, clean=True, will=None, expiry=None):
        self.proto = mqtt.MQTTv5 if proto == "5" else mqtt.MQTTv311
        self.messages = queue.Queue()
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or "paho-" + uuid.uuid4().hex[:8],
            protocol=self.proto,
            clean_session=None if self.proto == mqtt.MQTTv5 else clean,
        )
        self.connected = queue.Queue()
        self.subacks = queue.Queue()
        self.c.on_connect = lambda c, u, f, rc, p: self.connected.put((f.session_present, rc))
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        if will:
            topic, payload, qos = will
            self.c.will_set(topic, payload, qos=qos)
        props = None
        kwargs = {}
        if self.proto == mqtt.MQTTv5:
            kwargs["clean_start"] = clean
            if expiry is not None:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = expiry
        self.c.connect(host, port, keepalive=30, properties=props, **kwargs)
        self.c.loop_start()
        session_present, rc = self.connected.get(timeout=WAIT)
        if rc != 0:
            fail(f"CONNACK {rc}")
        self.session_present = bool(session_present)

    def subscribe(self, topic, qos):
        self.c.subscribe(topic, qos)
        rcs = self.subacks.get(timeout=WAIT)
        if any(rc.is_failure for rc in rcs):
            fail(f"SUBACK {rcs}")

    def publish(self, topic, payload, qos, retain=False, props=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(timeout=WAIT)
        if not info.is_published():
            fail(f"publish to {topic} not acknowledged")

    def next(self):
        try:
            return self.messages.get(timeout=WAIT)
        except queue.Empty:
            fail("no message within watchdog")

    def none_within(self, seconds):
        try:
            m = self.messages.get(timeout=seconds)
            fail(f"unexpected message on {m.topic}")
        except queue.Empty:
            pass

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def pubsub(host, port, proto):
    sub = Client(host, port, proto)
    sub.subscribe("paho/#", 2)
    pub = Client(host, port, proto)
    props = None
    if proto == "5":
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = "application/octet-stream"
        props.UserProperty = [("origin", "paho")]
    payloads = {0: b"\x00zero", 1: b"\x01one\xff", 2: bytes(range(256))}
    for qos, payload in payloads.items():
        pub.publish(f"paho/q{qos}", payload, qos, props=props)
    got = {}
    for _ in payloads:
        m = sub.next()
        got[m.topic] = (m.qos, m.payload)
        if proto == "5":
            up = getattr(m.properties, "UserProperty", None)
            if up != [("origin", "paho")]:
                fail(f"user properties {up}")
            if getattr(m.properties, "ContentType", None) != "application/octet-stream":
                fail("content type lost")
    for qos, payload in payloads.items():
        if got.get(f"paho/q{qos}") != (qos, payload):
            fail(f"q{qos}: got {got.get(f'paho/q{qos}')}")
    sub.close()
    pub.close()


def retained(host, port, proto):
    topic = f"paho/retained/{proto}"
    pub = Client(host, port, proto)
    pub.publish(topic, b"last-known", 1, retain=True)
    sub = Client(host, port, proto)
    sub.subscribe(topic, 1)
    m = sub.next()
    if (m.topic, m.payload, m.retain) != (topic, b"last-known", True):
        fail(f"retained: {(m.topic, m.payload, m.retain)}")
    pub.publish(topic, b"", 1, retain=True)  # clear
    m = sub.next()  # the clearing message itself is delivered live
    if m.payload != b"":
        fail("clear not delivered")
    late = Client(host, port, proto)
    late.subscribe(topic, 1)
    late.none_within(0.5)
    for c in (pub, sub, late):
        c.close()


def will(host, port, proto):
    topic = f"paho/will/{proto}"
    watcher = Client(host, port, proto)
    watcher.subscribe(topic, 1)
    doomed = Client(host, port, proto, will=(topic, b"connection lost", 1))
    # Drop the TCP connection without DISCONNECT.
    doomed.c.socket().shutdown(socket.SHUT_RDWR)
    m = watcher.next()
    if (m.topic, m.payload) != (topic, b"connection lost"):
        fail(f"will: {(m.topic, m.payload)}")
    doomed.c.loop_stop()
    # A clean disconnect publishes no will.
    polite = Client(host, port, proto, will=(topic, b"should not appear", 1))
    polite.close()
    watcher.none_within(0.5)
    watcher.close()


def persistent(host, port, proto):
    cid = "paho-persist-" + proto + "-" + uuid.uuid4().hex[:6]
    topic = f"paho/persist/{proto}"
    c = Client(host, port, proto, client_id=cid, clean=False, expiry=300)
    c.subscribe(topic + "/#", 1)
    c.close()
    time.sleep(0.2)
    pub = Client(host, port, proto)
    for i in range(3):
        pub.publish(f"{topic}/{i}", f"missed-{i}".encode(), 1)
    pub.close()
    c = Client(host, port, proto, client_id=cid, clean=False, expiry=300)
    if not c.session_present:
        fail("session not present on reconnect")
    got = sorted(c.next().payload for _ in range(3))
    if got != [b"missed-0", b"missed-1", b"missed-2"]:
        fail(f"persistent: {got}")
    c.close()


def main():
    if len(sys.argv) != 5:
        print(__doc__)
        sys.exit(2)
    host, port, scenario, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    {"pubsub": pubsub, "retained": retained, "will": will, "persistent": persistent}[scenario](
        host, port, proto
    )
    print(f"ok {scenario} {proto}", flush=True)


if __name__ == "__main__":
    main()
