"""The dashboard: the audience, the money and the last editions at a glance, and what needs attention."""

from __future__ import annotations

from flask import render_template

from newsletter.models import StaffRole
from newsletter.staff import money, stats
from newsletter.web.staff.access import bp, requires
from newsletter.web.staff.charts import Chart, Series

HISTORY_DAYS = 30


def _label(day) -> str:
    return f"{day.day} {day:%b}"


@bp.get("/")
@requires(StaffRole.VIEWER)
def dashboard():
    counts = stats.audience_counts()
    history = stats.audience_history(HISTORY_DAYS)
    labels = [_label(d) for d in history.days]
    audience_chart = Chart(
        title="Subscribers, last 30 days",
        description=(f"Confirmed subscribers went from {history.values['confirmed'][0]} to "
                     f"{history.values['confirmed'][-1]}; {history.values['pending'][-1]} are waiting to confirm and "
                     f"{history.values['unsubscribed'][-1]} have unsubscribed from everything."),
        labels=labels, unit="Day (UTC)",
        series=[Series("Confirmed", history.values["confirmed"], "c1"),
                Series("Pending", history.values["pending"], "c2"),
                Series("Unsubscribed", history.values["unsubscribed"], "c3")],
    )
    billing = money.ready()
    members_chart = revenue = None
    if billing:
        members = money.member_history(HISTORY_DAYS)
        members_chart = Chart(
            title="Members, last 30 days",
            description=f"Memberships with access went from {members[0]} to {members[-1]}.",
            labels=labels, unit="Day (UTC)", series=[Series("Members", members, "c4")],
        )
        revenue = money.monthly_recurring_revenue()
    editions = stats.recent_editions()
    editions_chart = Chart(
        title="Last editions: deliveries",
        description="Messages sent, failed and bounced for each of the last editions, oldest on the left.",
        labels=[f"{e.edition.newsletter.slug} {e.edition.run_at:%d %b}" for e in reversed(editions)],
        unit="Edition", kind="bars",
        series=[Series("Sent", [e.counts.sent for e in reversed(editions)], "c-sent"),
                Series("Failed", [e.counts.failed for e in reversed(editions)], "c-failed"),
                Series("Bounced", [e.counts.bounced for e in reversed(editions)], "c-bounced")],
    )
    return render_template(
        "staff/dashboard.html", counts=counts, audience_chart=audience_chart, billing=billing,
        members_chart=members_chart, revenue=revenue, editions=editions, editions_chart=editions_chart,
        attention=stats.attention(), sending=stats.deliveries_ready(),
    )
