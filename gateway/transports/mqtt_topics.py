"""The gateway's MQTT topics (the spec's section 4): what it subscribes, reads and answers on."""

from __future__ import annotations

UP_TOPICS = "smiley/v1/+/up"


def up_subscription(shared_group: str) -> str:
    """The filter the gateway subscribes: ``UP_TOPICS``, or its shared form in a group.

    A message delivered through ``$share/{group}/...`` keeps its own topic, so the
    terminal id is read from it as without a group (MQTT v5 section 4.8.2).
    """
    return f"$share/{shared_group}/{UP_TOPICS}" if shared_group else UP_TOPICS


def down_topic(terminal_id: int) -> str:
    return f"smiley/v1/{terminal_id}/down"


def topic_terminal(topic: str) -> int | None:
    """The decimal terminal id of ``smiley/v1/{id}/up``, or None if it is not one."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[:2] != ["smiley", "v1"] or parts[3] != "up":
        return None
    text = parts[2]
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        return None
    value = int(text)
    return value if value <= 0xFFFFFFFF else None
