"""A Flower ``Message`` as a test hands it to fedids' handlers: the content, its type and node ids; the
rest of the metadata fixed (Flower requires every field)."""

from __future__ import annotations

from flwr.app import Message, Metadata, RecordDict


def message(
    content: RecordDict,
    message_type: str,
    *,
    src: int = 0,
    dst: int = 1,
    reply_to: str = "",
    message_id: str = "m",
) -> Message:
    metadata = Metadata(
        run_id=1,
        message_id=message_id,
        src_node_id=src,
        dst_node_id=dst,
        reply_to_message_id=reply_to,
        group_id="1",
        created_at=0.0,
        ttl=60.0,
        message_type=message_type,
    )
    return Message(content, metadata=metadata)
