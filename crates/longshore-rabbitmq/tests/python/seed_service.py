"""A Python service written from the seed (shared/seed/messaging_patterns.md), used by
tests/interop.rs to check that longshore and the seed's services interoperate both ways.

The classes are the seed's, with only the defects fixed that would stop them from running or
lose messages (each marked "fix:"):
- the seed imports `UUID` but calls `uuid.uuid4()`;
- the seed's consumer rejects inside `message.process()`, which already settles the message;
- the seed's consumer never binds its queue to the exchange, so it would receive nothing.

Usage (one JSON object per line on stdout):
  seed_service.py publish URL EXCHANGE ROUTING_PREFIX COUNT
      publishes COUNT events (order_created / order_cancelled alternately) to
      ROUTING_PREFIX.<event_type>; prints each event's to_dict().
  seed_service.py consume URL EXCHANGE QUEUE PATTERN COUNT TIMEOUT_SECONDS
      declares dlx and QUEUE exactly as the seed does, binds it by PATTERN, prints
      {"ready": true}, then prints each handled event until COUNT were handled.
  seed_service.py declare URL QUEUE
      declares QUEUE exactly as the seed does; prints {"declared": QUEUE}.
"""

import asyncio
import json
import logging
import sys
import uuid  # fix: the seed uses uuid.uuid4() but imports only UUID
from abc import ABC, abstractmethod
from datetime import datetime
from functools import wraps
from typing import Any, Callable, Dict
from uuid import UUID

import aio_pika
from aio_pika import IncomingMessage


class DomainEvent:
    def __init__(self, event_type: str, data: Dict[str, Any]):
        self.event_type = event_type
        self.data = data
        self.timestamp = datetime.utcnow()
        self.event_id = uuid.uuid4()

    def to_dict(self) -> Dict[str, Any]:
        return {
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "data": self.data,
            "timestamp": self.timestamp.isoformat(),
        }


class MessagePublisher(ABC):
    @abstractmethod
    async def publish(self, event: DomainEvent, routing_key: str) -> None:
        pass


class RabbitMQPublisher(MessagePublisher):
    def __init__(self, connection_url: str, exchange_name: str):
        self._connection_url = connection_url
        self._exchange_name = exchange_name
        self._connection = None
        self._channel = None
        self._exchange = None

    async def connect(self) -> None:
        if not self._connection:
            self._connection = await aio_pika.connect_robust(self._connection_url)
            self._channel = await self._connection.channel()
            self._exchange = await self._channel.declare_exchange(
                self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )

    async def publish(self, event: DomainEvent, routing_key: str) -> None:
        await self.connect()
        message = aio_pika.Message(
            body=json.dumps(event.to_dict()).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=str(event.event_id),
        )
        await self._exchange.publish(message, routing_key=routing_key)

    async def close(self) -> None:
        if self._connection:
            await self._connection.close()


class MessageHandler:
    def __init__(self, logger: logging.Logger):
        self._logger = logger

    def handle_errors(self, func: Callable) -> Callable:
        @wraps(func)
        async def wrapper(message: IncomingMessage) -> None:
            # fix: process(requeue=False) rejects to the DLX on an exception by itself; the
            # seed's extra reject() inside process() settles the message twice.
            async with message.process(requeue=False):
                try:
                    await func(message)
                except Exception as e:
                    self._logger.error(f"Error processing message: {str(e)}", exc_info=True)
                    raise

        return wrapper


class OrderEventConsumer:
    def __init__(self, connection_url: str, queue_name: str, handler: MessageHandler,
                 exchange_name: str, pattern: str, on_event: Callable):
        self._connection_url = connection_url
        self._queue_name = queue_name
        self._handler = handler
        self._logger = logging.getLogger(__name__)
        self._exchange_name = exchange_name
        self._pattern = pattern
        self._on_event = on_event
        self.connection = None

    async def start(self) -> None:
        connection = await aio_pika.connect_robust(self._connection_url)
        self.connection = connection
        channel = await connection.channel()

        # Dead Letter Exchange の設定
        await channel.declare_exchange("dlx", aio_pika.ExchangeType.DIRECT, durable=True)

        # キューの宣言
        queue = await channel.declare_queue(
            self._queue_name,
            durable=True,
            arguments={
                "x-dead-letter-exchange": "dlx",
                "x-dead-letter-routing-key": f"dlq.{self._queue_name}",
            },
        )
        # fix: the seed never binds the queue, so it would receive nothing.
        exchange = await channel.declare_exchange(
            self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await queue.bind(exchange, routing_key=self._pattern)

        await queue.consume(self._handler.handle_errors(self._process_message))
        self._logger.info(f"Started consuming from queue: {self._queue_name}")

    async def _process_message(self, message: IncomingMessage) -> None:
        try:
            payload = json.loads(message.body.decode())
            event_type = payload.get("event_type")

            if event_type == "order_created":
                await self._handle_order_created(payload, message)
            elif event_type == "order_cancelled":
                await self._handle_order_cancelled(payload, message)
            else:
                self._logger.warning(f"Unknown event type: {event_type}")

        except json.JSONDecodeError:
            self._logger.error("Invalid JSON payload")
            raise

    async def _handle_order_created(self, payload, message) -> None:
        self._on_event("order_created", payload, message)

    async def _handle_order_cancelled(self, payload, message) -> None:
        self._on_event("order_cancelled", payload, message)


def emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def publish(url: str, exchange: str, prefix: str, count: int) -> None:
    publisher = RabbitMQPublisher(url, exchange)
    for i in range(count):
        if i % 2 == 0:
            event = DomainEvent("order_created", {"order_id": f"py-{i}", "total_cents": 100 * i})
        else:
            event = DomainEvent("order_cancelled", {"order_id": f"py-{i}", "reason": "seed says no"})
        await publisher.publish(event, f"{prefix}.{event.event_type}")
        emit(event.to_dict())
    await publisher.close()


async def consume(url: str, exchange: str, queue: str, pattern: str, count: int, timeout: float) -> int:
    done = asyncio.get_running_loop().create_future()
    handled = []

    def on_event(kind: str, payload: dict, message: IncomingMessage) -> None:
        # "parse": the envelope's id is a UUID and its timestamp an ISO 8601 date-time.
        UUID(payload["event_id"])
        datetime.fromisoformat(payload["timestamp"])
        handled.append(payload["event_id"])
        emit({
            "handled_by": kind,
            "event": payload,
            "message_id": message.message_id,
            "content_type": message.content_type,
            "delivery_mode": int(message.delivery_mode or 0),
            "headers": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (message.headers or {}).items()},
        })
        if len(handled) >= count and not done.done():
            done.set_result(True)

    consumer = OrderEventConsumer(url, queue, MessageHandler(logging.getLogger("seed")),
                                  exchange, pattern, on_event)
    await consumer.start()
    emit({"ready": True})
    try:
        await asyncio.wait_for(done, timeout)
        return 0
    except asyncio.TimeoutError:
        emit({"timeout": True, "handled": len(handled)})
        return 1
    finally:
        await consumer.connection.close()


async def declare(url: str, queue: str) -> int:
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel()
        await channel.declare_exchange("dlx", aio_pika.ExchangeType.DIRECT, durable=True)
        await channel.declare_queue(
            queue,
            durable=True,
            arguments={
                "x-dead-letter-exchange": "dlx",
                "x-dead-letter-routing-key": f"dlq.{queue}",
            },
        )
        emit({"declared": queue})
        return 0
    except Exception as e:  # PRECONDITION_FAILED and friends
        emit({"error": str(e)})
        return 1
    finally:
        await connection.close()


def main(argv) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    mode = argv[1]
    if mode == "publish":
        asyncio.run(publish(argv[2], argv[3], argv[4], int(argv[5])))
        return 0
    if mode == "consume":
        return asyncio.run(consume(argv[2], argv[3], argv[4], argv[5], int(argv[6]), float(argv[7])))
    if mode == "declare":
        return asyncio.run(declare(argv[2], argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
