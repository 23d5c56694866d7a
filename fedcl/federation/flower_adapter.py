"""Every use of Flower internals, in one place (supported: Flower 1.42.x).

fedcl uses Flower's public Message API everywhere else. Three jobs need more than that:

- **byte counting**: the exact serialised size of a message (its inflatable object tree, with the
  metadata's run/node/task ids counted at their widest varint so every engine counts the same);
- **the in-process grid** (:mod:`fedcl.federation.inline`): a message rebuilt from its wire bytes,
  message ids, and the process-wide task identity that Flower stamps on new messages;
- **differential privacy**: Flower's flat clipping of a model update and its noise scale.

Importing this module checks ``flwr.__version__``: another minor version may have moved these
internals, so fedcl warns once and names what to do (install ``flwr==1.42.*``, or update this module).
"""

from __future__ import annotations

import contextlib
import copy
import uuid
import warnings
from collections.abc import Iterator

import flwr

SUPPORTED = "1.42"


def check_flower_version(version: str = flwr.__version__) -> str | None:
    """None when ``version`` is supported, else the message fedcl warns with."""
    if version.startswith(SUPPORTED + "."):
        return None
    return (f"fedcl supports Flower {SUPPORTED}.x, found flwr {version}: byte counts, the inline backend and central DP "
            f"use Flower internals that may have changed. Install 'flwr=={SUPPORTED}.*', or update "
            "fedcl/federation/flower_adapter.py for this version and run tests/test_strategy.py and tests/test_federated_semantics.py.")


if (_problem := check_flower_version()) is not None:
    warnings.warn(_problem, RuntimeWarning, stacklevel=2)

# internals (imported after the version check so that a failure comes with the message above)
try:
    from flwr.app import ArrayRecord, Message, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.common.serde_utils import error_to_proto, metadata_to_proto
    from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=E0611
    from flwr.supercore.differential_privacy import compute_clip_model_update, compute_stdv
    from flwr.supercore.inflatable.inflatable_object import (
        InflatableObject,
        _get_computed_object_ids,
        add_header_to_object_body,
        get_all_nested_objects,
        get_object_id,
        no_object_id_recompute,
    )
    from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
except ImportError as exc:  # pragma: no cover - only on an unsupported Flower
    raise ImportError(f"{exc}. {check_flower_version() or 'Flower internals moved.'}") from exc

__all__ = ["SUPERLINK_NODE_ID", "Run", "clip_flat", "empty_run", "gaussian_noise_std", "get_all_nested_objects", "message_bytes",
           "new_message_id", "over_the_wire", "task_identity"]

_WIDEST_ID = 2**64 - 1  # a uint64 whose varint takes the most bytes


# ---------------------------------------------------------------------- byte counting
def _message_object_bytes(message: Message) -> int:
    """Size of the Message object itself (metadata), with run, node and task ids at their widest."""
    proto = metadata_to_proto(message.metadata)
    proto.message_id = ""  # as in Message.deflate
    for name in ("run_id", "src_node_id", "dst_node_id", "src_task_id", "dst_task_id"):
        setattr(proto, name, _WIDEST_ID)  # set or not, random or not: the same count on every engine
    error = error_to_proto(message.error) if message.has_error() else None
    body = ProtoMessage(metadata=proto, content=None, error=error).SerializeToString(deterministic=True)
    return len(add_header_to_object_body(body, message))


def message_bytes(message: Message | InflatableObject) -> int:
    """Serialized size of a Message (or of any inflatable part of one, e.g. its RecordDict): each object deflated
    once, an unchanged array object not at all once its size is known. A message rebuilt by :func:`over_the_wire`
    is counted from the bytes it arrived as (its metadata afresh)."""
    arrived = message.__dict__.get(_ARRIVED) if isinstance(message, Message) else None
    sizes: dict[str, int] = {}
    with no_object_id_recompute():
        if arrived is not None and arrived[0] is _content_or_none(message):
            if arrived[0] is not None:  # its id, as it arrived (the Message object's header names it)
                _get_computed_object_ids().add(arrived[1])
                arrived[0].__dict__["_object_id"] = arrived[1]
            return _message_object_bytes(message) + arrived[2]
        root = _deflate_tree(message, sizes, None)
        if isinstance(message, Message):
            sizes[root] = _message_object_bytes(message)
    return sum(sizes.values())


# ---------------------------------------------------------------------- in-process grid
def over_the_wire(msg: Message) -> Message:
    """A new Message inflated from ``msg``'s serialised objects (each deflated once): what the other side gets,
    no shared objects. It remembers its content's wire size, so that :func:`message_bytes` need not deflate it again."""
    contents: dict[str, bytes] = {}
    with no_object_id_recompute():
        root = _deflate_tree(msg, {}, contents)
        size = sum(len(c) for oid, c in contents.items() if oid != root)
        content_id = msg.content.object_id if msg.has_content() else None
        received = inflate_object_from_contents(root, contents)
    received.metadata.__dict__.update(copy.copy(msg.metadata).__dict__)
    received.__dict__[_ARRIVED] = (_content_or_none(received), content_id, size)
    return received


_ARRIVED = "_fedcl_arrived"  # (the content a message arrived with, its id, its serialised size without the Message object)
#: object id -> serialised size. An object id is the SHA-256 of the object's bytes, so the size it names is exact
_SIZES: dict[str, int] = {}
_MAX_SIZES = 100_000


def _content_or_none(msg: Message) -> RecordDict | None:
    return msg.content if msg.has_content() else None


def _parts(obj: InflatableObject) -> list[InflatableObject]:
    """``obj``'s child objects, without computing their ids (Flower's ``children`` keys them by id)."""
    if isinstance(obj, Message):
        return [obj.content] if obj.has_content() else []
    if isinstance(obj, (RecordDict, ArrayRecord)):
        return list(obj.values())
    return list((obj.children or {}).values())


def _deflate_tree(obj: InflatableObject, sizes: dict[str, int], contents: dict[str, bytes] | None) -> str:
    """Serialise ``obj`` and its descendants (children first), each once, into ``sizes`` (and ``contents`` when
    given); returns ``obj``'s id, set as Flower's ``object_id`` sets it, inside ``no_object_id_recompute``.
    An object that tracks changes (arrays) and is unchanged keeps its id; without ``contents``, its size is reused."""
    for part in _parts(obj):
        _deflate_tree(part, sizes, contents)
    oid = None if obj.is_dirty else obj.__dict__.get("_object_id")
    if contents is None and oid in _SIZES:
        sizes[oid] = _SIZES[oid]
        return oid
    content = obj.deflate()
    if oid is None:
        oid = get_object_id(content)
        obj.__dict__["_object_id"] = oid
    _get_computed_object_ids().add(oid)
    if len(_SIZES) >= _MAX_SIZES:
        _SIZES.clear()
    sizes[oid] = _SIZES[oid] = len(content)
    if contents is not None:
        contents[oid] = content
    return oid


def new_message_id(msg: Message) -> str:
    """Give ``msg`` a fresh message id (a SuperLink does this when it stores a message); returns it."""
    msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
    return msg.metadata.message_id


def mark_delivered(msg: Message, at: float) -> None:
    msg.metadata.__dict__["_delivered_at"] = str(at)


def set_source(msg: Message, node_id: int) -> None:
    """The node a reply comes from (a SuperLink sets it on the replies it relays)."""
    msg.metadata.__dict__["_src_node_id"] = node_id


@contextlib.contextmanager
def task_identity(run_id: int, node_id: int, task_id: int) -> Iterator[None]:
    """Flower stamps new messages with the process's (run, node, task) identity; set it for a block."""
    saved = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, node_id, task_id
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def empty_run(run_id: int) -> Run:
    return Run.create_empty(run_id)


# ---------------------------------------------------------------------- differential privacy
def clip_flat(new: list, reference: list, clipping_norm: float) -> None:
    """Clip (in place) the update ``new - reference`` of numpy arrays to L2 norm ``clipping_norm`` (FlatClip)."""
    compute_clip_model_update(new, reference, clipping_norm)


def gaussian_noise_std(noise_multiplier: float, clipping_norm: float, num_clients: int) -> float:
    """Flower's noise scale for the mean of ``num_clients`` clipped updates: z * C / m."""
    return compute_stdv(noise_multiplier, clipping_norm, num_clients)
