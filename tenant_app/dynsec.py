"""Per-device MQTT accounts through Mosquitto's dynamic-security plugin (no broker restart).

Each device gets a client whose only right is publishing to its own telemetry topic; the broker
itself refuses anything else. Commands go to `$CONTROL/dynamic-security/v1` over a short-lived
admin connection.
"""

from __future__ import annotations

import json
import threading
import uuid

import paho.mqtt.client as mqtt

from tenant_app.config import TELEMETRY_SHARED_SUBSCRIPTION, TELEMETRY_SUBSCRIPTION, TELEMETRY_TOPIC

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
CONSUMER_ROLE = "iotistic-ingest"


class DynsecError(RuntimeError):
    """The broker refused a command or could not be reached."""


def device_role(device_id: str) -> str:
    return f"device-{device_id}"


class DynsecAdmin:
    """Runs dynamic-security commands as the broker's admin user."""

    def __init__(self, host: str, port: int, username: str, password: str, timeout: float = 5.0) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.timeout = timeout
        self._lock = threading.Lock()  # one admin connection at a time is plenty

    def execute(self, *commands: dict, ignore: tuple[str, ...] = ()) -> list[dict]:
        """Send `commands` in one message; raise DynsecError for any error not listed in `ignore`."""
        with self._lock:
            responses = self._roundtrip(list(commands))
        for r in responses:
            error = r.get("error")
            if error and not any(i in error for i in ignore):
                raise DynsecError(f"broker refused {r.get('command')}: {error}")
        return responses

    def _roundtrip(self, commands: list[dict]) -> list[dict]:
        correlation = uuid.uuid4().hex
        for c in commands:
            c.setdefault("correlationData", correlation)
        done = threading.Event()
        subscribed = threading.Event()
        connected: list[mqtt.ReasonCode] = []
        responses: list[dict] = []

        def on_connect(client, userdata, flags, reason, props):
            connected.append(reason)
            if not reason.is_failure:
                client.subscribe(RESPONSE_TOPIC, qos=1)
            else:
                done.set()

        def on_message(client, userdata, msg):
            try:
                body = json.loads(msg.payload)
            except ValueError:
                return
            mine = [r for r in body.get("responses", []) if r.get("correlationData") == correlation]
            responses.extend(mine)
            if len(responses) >= len(commands):
                done.set()

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"iotistic-admin-{correlation[:12]}")
        client.username_pw_set(self.username, self.password)
        client.on_connect = on_connect
        client.on_subscribe = lambda *a: subscribed.set()
        client.on_message = on_message
        try:
            client.connect(self.host, self.port, keepalive=30)
        except OSError as e:
            raise DynsecError(f"MQTT broker {self.host}:{self.port} unreachable: {e}") from e
        client.loop_start()
        try:
            if not subscribed.wait(self.timeout):
                reason = connected[0] if connected else "no answer"
                raise DynsecError(f"could not log in to the broker as {self.username!r}: {reason}")
            client.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
            if not done.wait(self.timeout):
                raise DynsecError("the broker did not answer the dynamic-security command")
        finally:
            client.disconnect()
            client.loop_stop()
        return responses

    # --- use cases ---------------------------------------------------------------------------------
    def create_device(self, device_id: str, password: str) -> None:
        """Create the device's client and role (replacing stale ones) with `password`.

        The account is bound to client id = device id: the broker refuses the device under any
        other client id, so it can never take over another device's or the consumer's session.
        """
        # The caller holds the only device row for this id, so any account by that name is stale.
        self.delete_device(device_id)
        role = device_role(device_id)
        topic = TELEMETRY_TOPIC.format(device_id=device_id)
        self.execute(
            {
                "command": "createRole",
                "rolename": role,
                "acls": [{"acltype": "publishClientSend", "topic": topic, "priority": 0, "allow": True}],
            },
            {
                "command": "createClient",
                "username": device_id,
                "clientid": device_id,
                "password": password,
                "roles": [{"rolename": role}],
            },
        )

    def delete_device(self, device_id: str) -> None:
        """Remove the device's client (disconnecting it) and its role; missing ones are fine."""
        self.execute(
            {"command": "deleteClient", "username": device_id},
            {"command": "deleteRole", "rolename": device_role(device_id)},
            ignore=("not found",),
        )

    def bind_client_ids(self, device_ids: list[str]) -> None:
        """Bind existing device accounts to their own client id (accounts made before binding)."""
        for start in range(0, len(device_ids), 100):
            chunk = device_ids[start : start + 100]
            if chunk:
                self.execute(
                    *({"command": "setClientId", "username": d, "clientid": d} for d in chunk),
                    ignore=("not found",),
                )

    def ensure_consumer(self, username: str, password: str, client_id: str) -> None:
        """Create (or reset the password of) an ingestion consumer's account, bound to `client_id`.

        Bound, the account cannot be used under another client id, and (device accounts being
        bound to their own ids) no other account can present the consumer's client id. Every
        consumer process of an instance has its own account; they share the consumer role, which
        may subscribe to telemetry, plainly or through the shared subscription.
        """
        self.execute(
            {"command": "createRole", "rolename": CONSUMER_ROLE, "acls": []},
            {
                "command": "createClient",
                "username": username,
                "clientid": client_id,
                "password": password,
                "roles": [{"rolename": CONSUMER_ROLE}],
            },
            ignore=("already exists",),
        )
        # Added one by one (a role made by an older version lacks the shared subscription's ACL).
        self.execute(
            *(
                {"command": "addRoleACL", "rolename": CONSUMER_ROLE, "allow": True, "priority": 0, **acl}
                for acl in _CONSUMER_ACLS
            ),
            ignore=("already exists",),
        )
        self.execute(
            {"command": "setClientPassword", "username": username, "password": password},
            {"command": "setClientId", "username": username, "clientid": client_id},
        )


# What the consumer role may do: subscribe to telemetry (the broker checks a shared subscription's
# filter with its `$share/<group>/` prefix) and receive it.
_CONSUMER_ACLS = (
    {"acltype": "subscribePattern", "topic": TELEMETRY_SUBSCRIPTION},
    {"acltype": "subscribePattern", "topic": TELEMETRY_SHARED_SUBSCRIPTION},
    {"acltype": "publishClientReceive", "topic": TELEMETRY_SUBSCRIPTION},
)
