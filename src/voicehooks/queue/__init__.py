"""The delivery queue: the only writer of `deliveries` and `delivery_queue`.

- `enqueue`: new deliveries (ingestion, test events), queued or waiting behind their call;
- `claim`: lease the due heads of calls, per destination host, within each host's room;
- `results`: record a batch of attempts, re-queue retries, queue what the finished ones held;
- `requeue`: one more attempt (retry, recover) and stopping a subscription's pending work;
- `upkeep`: the backstop for a call left without a queued delivery, and retention;
- `order`: the order-per-call rule, in one statement fragment every writer above uses;
- `wakeup`: the channel on which writers wake the dispatchers, and cancel a subscription.
"""
