"""The overview's hourly figures: counted once, counted again as deliveries change, a few
hours per page, and at once for the hours a recover reopened."""

from tests.operations_helpers import ingest
from tests.portal_helpers import post_form, signed_in
from tests.support import call_event, create_subscription
from voicehooks.portal import rollups

HOURS_BACK = range(1, 7)  # the six hours before this one


def _bars(page: str, state: str) -> int:
    return page.count(f'class="bar bar-{state}"')


async def test_hours_are_counted_again_a_few_per_page_and_at_once_after_a_recover(
    client, tenant, db, monkeypatch
):
    # A page counts hours again up to a number of deliveries: here two (one hour each).
    monkeypatch.setattr(rollups, "RECOUNT_BUDGET", 2)
    subscription = await create_subscription(client, tenant)
    for hour in HOURS_BACK:
        await ingest(client, call_event(tenant.workspace_id, call_id=f"call-{hour}"))
    # Hours pass: each delivery moves into the hour its call id names, and fails.
    await db.execute("DELETE FROM delivery_queue")
    await db.execute(
        """UPDATE deliveries SET state = 'failed', next_attempt_at = NULL,
               created_at = date_trunc('hour', now())
                   - make_interval(hours => split_part(call_id, '-', 2)::int, secs => -1)"""
    )
    csrf = await signed_in(client, tenant)
    first = (await client.get("/portal/")).text
    assert _bars(first, "failed") == len(HOURS_BACK)

    # They succeed after all: the stored hours still say failed until they are counted again.
    await db.execute("UPDATE deliveries SET state = 'succeeded'")
    assert _bars((await client.get("/portal/")).text, "failed") == len(HOURS_BACK)
    await db.execute("UPDATE delivery_hours SET refreshed_at = now() - interval '2 hours'")
    counted_again = (await client.get("/portal/")).text
    assert _bars(counted_again, "failed") == len(HOURS_BACK) - 2
    assert _bars((await client.get("/portal/")).text, "failed") == len(HOURS_BACK) - 4
    assert _bars((await client.get("/portal/")).text, "failed") == 0

    # A recover reopens them: the overview shows them pending on the next page.
    await db.execute("UPDATE deliveries SET state = 'failed'")
    answer = await post_form(
        client,
        f"/portal/subscriptions/{subscription['id']}/recover",
        {"since": "2020-01-01T00:00", "since_offset": "+00:00", "csrf_token": csrf},
    )
    assert answer.status_code == 303, answer.text
    reopened = (await client.get("/portal/")).text
    assert _bars(reopened, "pending") == len(HOURS_BACK)
    assert _bars(reopened, "failed") == 0
