"""The queue: folders, queue IDs, queue files (see queue_file.py for the
record layout), atomic moves.  DESIGN.md "The queue"; INTERNALS.md pfy.queue.
"""

from pfy.queue.directory import (
    LOG_QUEUE_NAMES, QUEUE_NAMES, TEMP_FILE_MAX_AGE, Queue, QueueEntry,
)
from pfy.queue.queue_file import (
    STAT_READY, CorruptQueueFile, Envelope, QueueFileReader, QueueFileWriter,
    Recipient, mark_done, update_warn_time,
)
from pfy.queue.queue_id import is_queue_id, long_queue_id, short_queue_id

__all__ = [
    "Queue", "QueueEntry", "QUEUE_NAMES", "LOG_QUEUE_NAMES", "TEMP_FILE_MAX_AGE",
    "STAT_READY", "CorruptQueueFile", "Envelope", "QueueFileReader",
    "QueueFileWriter", "Recipient", "mark_done", "update_warn_time",
    "is_queue_id", "long_queue_id", "short_queue_id",
]
