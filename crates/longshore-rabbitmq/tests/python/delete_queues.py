"""Deletes the queues named on stdin (one a line) on the broker at argv[1]. Used by
`scripts/rabbitmq-broker.sh clean` to remove what test runs leave behind."""

import asyncio
import sys

import aio_pika


async def main(url: str) -> int:
    names = [line.strip() for line in sys.stdin if line.strip()]
    connection = await aio_pika.connect(url)
    deleted = 0
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
            deleted += 1
    finally:
        await connection.close()
    print(f"deleted {deleted} test queues")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
