"""Order per call: of a call's pending deliveries for one subscription, only the earliest is
queued (may be claimed); the next is queued when that one is final.

The rule is the unique key of `delivery_queue` on (subscription, call) plus this fragment,
the only statement that adds rows to it. Each writer supplies its candidates as a CTE named
`to_queue` (delivery_id, created_at, subscription_id, call_id, target_host, seq); of each call
the one with the lowest sequence is queued, unless the call has a queued delivery already (then the
candidates wait in `deliveries` with no due time). The fragment returns the ids it queued.
"""

QUEUE_HEADS = """
    INSERT INTO delivery_queue (delivery_id, delivery_created_at, subscription_id, call_id,
                                target_host, due_at)
    SELECT DISTINCT ON (subscription_id, call_id)
           delivery_id, created_at, subscription_id, call_id, target_host, now()
    FROM to_queue
    ORDER BY subscription_id, call_id, seq
    ON CONFLICT (subscription_id, call_id) DO NOTHING
    RETURNING delivery_id
"""
