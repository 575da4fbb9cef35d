"""pydiaspora: the Python client of diaspora, a resilient data-streaming
runtime for scientific workflows.

>>> import numpy as np, pydiaspora as dsp
>>> with dsp.Node("/tmp/pydiaspora-doc") as node:          # an embedded node
...     client = node.client()
...     node.create_topic("frames", partitions=1)
...     with client.producer("frames") as p:
...         p.send_wait(np.zeros((4, 4), dtype=np.uint16), metadata={"scan": 17})
...     c = client.consumer("frames")
...     item = c.poll(timeout=5)
...     item.array().shape
(4, 4)

Every blocking call releases the GIL while it waits, and can be interrupted
with Ctrl-C. The `*_async` methods (and `async for item in consumer`) are
their asyncio forms. Errors are subclasses of `DiasporaError`.
"""

from ._native import (  # noqa: F401
    ArrayError,
    Client,
    ConnectionFailed,
    Consumer,
    Delivered,
    Delivery,
    DiasporaError,
    Fenced,
    GroupError,
    InvalidRequest,
    Item,
    LimitExceeded,
    Node,
    NotFound,
    OffsetOutOfRange,
    Payload,
    PermissionDenied,
    Producer,
    Provenance,
    ProvenanceError,
    ShutDown,
    StorageError,
    StreamConsumer,
    StreamItem,
    StreamProducer,
    TopicExists,
    Unauthenticated,
    UnknownPartition,
    UnknownTopic,
    View,
    ViewItem,
    __version__,
)

__all__ = [
    "ArrayError",
    "Client",
    "ConnectionFailed",
    "Consumer",
    "Delivered",
    "Delivery",
    "DiasporaError",
    "Fenced",
    "GroupError",
    "InvalidRequest",
    "Item",
    "LimitExceeded",
    "Node",
    "NotFound",
    "OffsetOutOfRange",
    "Payload",
    "PermissionDenied",
    "Producer",
    "Provenance",
    "ProvenanceError",
    "ShutDown",
    "StorageError",
    "StreamConsumer",
    "StreamItem",
    "StreamProducer",
    "TopicExists",
    "Unauthenticated",
    "UnknownPartition",
    "UnknownTopic",
    "View",
    "ViewItem",
    "__version__",
]
