from tests.support import (
    INGEST_TOKEN,
    SEED_BODY,
    Reply,
    call_event,
    create_subscription,
    wait_until,
)


async def test_seed_example_and_a_signed_delivery(client, tenant, receiver, dispatcher):
    created = await client.post(tenant.subscriptions, json=SEED_BODY, headers=tenant.headers)
    assert created.status_code == 201, created.text
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.reply(Reply(200))
    response = await client.post(
        "/internal/v1/events",
        json=call_event(tenant.workspace_id),
        headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["deliveries"] == 1
    await wait_until(lambda: receiver.to("/hook"))
    assert receiver.to("/hook")[0].json()["payload"]["status"] == "ringing"
    assert sub["signingKey"]
