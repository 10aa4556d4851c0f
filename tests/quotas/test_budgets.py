"""Monthly budgets: what counts against them, the launch rule, and the refusals through the
launch and extension pages and "Run now"."""

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse

from clusters import services
from clusters.models import Cluster
from clusters.services import ClusterSpec
from jobs.models import Run
from quotas import usage
from quotas.limits import LimitExceeded
from quotas.models import UserLimits
from tests.quotas.conftest import NOW

pytestmark = pytest.mark.django_db


def budget(user, node_hours=None, cost=None):
    UserLimits.objects.update_or_create(
        user=user, defaults={"monthly_node_hours": node_hours, "monthly_cost": cost}
    )


def test_a_month_counts_the_node_hours_spent_in_it(alice, bob, make_cluster):
    start = usage.month_start(NOW)
    make_cluster(alice, NOW - timedelta(days=3), hours=2, size=3)  # 6
    make_cluster(alice, NOW - timedelta(hours=1), size=2, backend="emr")  # live: 3 nodes x 1 h
    make_cluster(alice, start - timedelta(hours=4), hours=10)  # 6 of its 10 h this month
    make_cluster(alice, start - timedelta(days=5), hours=3)  # last month only
    make_cluster(bob, NOW - timedelta(days=1), hours=5)  # someone else's
    assert usage.month_spend(alice.pk, start, NOW).node_hours == pytest.approx(6 + 3 + 6)
    last = usage.previous_month(start)
    assert usage.month_spend(alice.pk, last, NOW).node_hours == pytest.approx(4 + 3)


def test_committed_counts_live_clusters_until_their_expiry(alice, make_cluster):
    make_cluster(alice, NOW - timedelta(hours=1), size=2, expires=NOW + timedelta(hours=3))
    start = usage.month_start(NOW)
    assert usage.month_spend(alice.pk, start, NOW).node_hours == pytest.approx(2)
    assert usage.month_spend(alice.pk, start, NOW, committed=True).node_hours == pytest.approx(8)


def test_a_launch_that_would_pass_the_node_hour_budget_is_refused(alice, make_cluster):
    budget(alice, node_hours=20)
    make_cluster(alice, NOW - timedelta(days=2), hours=5, size=2)  # 10 used
    usage.check_budget(alice, 10, NOW)  # exactly the budget: allowed
    with pytest.raises(LimitExceeded, match="used or reserved 10.0 of your 20 node-hours"):
        usage.check_budget(alice, 10.5, NOW)
    # A live cluster reserves the rest of its lifetime: 1 node, 1 h used, 4 h to go.
    make_cluster(alice, NOW - timedelta(hours=1), expires=NOW + timedelta(hours=4))
    with pytest.raises(LimitExceeded):
        usage.check_budget(alice, 6, NOW)
    usage.check_budget(alice, 5, NOW)


def test_the_cost_budget_uses_each_clusters_own_price(alice, make_cluster, settings):
    budget(alice, node_hours=0, cost=100)  # 0: no node-hour budget
    make_cluster(alice, NOW - timedelta(days=1), hours=10, size=2, price=4.0)  # 80.00
    settings.CLUSTER_PRICE_PER_NODE_HOUR = 1.0  # today's price: the old cluster keeps 4.0
    usage.check_budget(alice, 20, NOW)
    settings.CLUSTER_PRICE_PER_NODE_HOUR = 2.0
    with pytest.raises(LimitExceeded, match=r"cost about 42.00.*80.00 of your monthly budget"):
        usage.check_budget(alice, 21, NOW)


def test_staff_have_no_budget_unless_an_override_sets_one(staff, make_cluster):
    make_cluster(staff, NOW - timedelta(days=1), hours=100, size=10)
    usage.check_budget(staff, 10_000, NOW)
    budget(staff, node_hours=1000)
    with pytest.raises(LimitExceeded):
        usage.check_budget(staff, 1, NOW)


def test_the_default_budget_applies_to_users_without_an_override(alice, settings):
    settings.USER_MONTHLY_NODE_HOURS = 10
    with pytest.raises(LimitExceeded):
        usage.check_budget(alice, 11, NOW)
    settings.USER_MONTHLY_NODE_HOURS = 0  # no budget
    usage.check_budget(alice, 11, NOW)


def test_a_terminated_clusters_figures_are_final(alice, make_cluster, settings):
    settings.CLUSTER_PRICE_PER_NODE_HOUR = 3.0
    cluster = services.launch_cluster(alice, ClusterSpec(name="x", size=2))
    Cluster.objects.filter(pk=cluster.pk).update(
        state=Cluster.State.TERMINATED,
        started_at=NOW - timedelta(hours=3),
        terminated_at=NOW - timedelta(hours=1),
    )
    cluster.refresh_from_db()
    assert (cluster.price_per_node_hour, cluster.node_hours, cluster.estimated_cost) == (
        3.0,
        4.0,
        12.0,
    )
    settings.CLUSTER_PRICE_PER_NODE_HOUR = 5.0
    with time_machine.travel(NOW + timedelta(days=3), tick=False):
        again = Cluster.objects.get(pk=cluster.pk)
        assert (again.node_hours, again.estimated_cost) == (4.0, 12.0)


# --- Through the services and pages that launch ---------------------------------------------


@time_machine.travel(NOW, tick=False)
def test_the_launch_page_shows_a_budget_refusal_as_a_form_error(alice, alice_client, make_cluster):
    budget(alice, node_hours=10)
    make_cluster(alice, NOW - timedelta(days=1), hours=4)
    form = {"name": "big", "backend": "local", "size": 2, "lifetime_hours": 4}
    page = alice_client.post(reverse("clusters-new"), form)
    assert page.status_code == 200
    assert "used or reserved 4.0 of your 10 node-hours" in page.content.decode()
    assert not Cluster.objects.filter(name="big").exists()
    form["lifetime_hours"] = 3  # 2 x 3 = 6: 4 + 6 = 10 fits
    assert alice_client.post(reverse("clusters-new"), form).status_code == 302
    assert Cluster.objects.get(name="big").price_per_node_hour == 0.0


@time_machine.travel(NOW, tick=False)
def test_an_extension_past_the_budget_is_refused_with_a_message(alice, alice_client):
    budget(alice, node_hours=10)
    cluster = services.launch_cluster(alice, ClusterSpec(name="x", size=2, lifetime_hours=4))
    page = alice_client.post(
        reverse("clusters-extend", args=[cluster.pk]), {"hours": 2}, follow=True
    )
    assert "node-hours" in page.content.decode() and "used or reserved 8.0" in page.content.decode()
    assert Cluster.objects.get(pk=cluster.pk).extension_count == 0
    alice_client.post(reverse("clusters-extend", args=[cluster.pk]), {"hours": 1})
    assert Cluster.objects.get(pk=cluster.pk).extension_count == 1


@time_machine.travel(NOW, tick=False)
def test_run_now_refuses_a_run_whose_own_cluster_would_pass_the_budget(
    alice, alice_client, make_job
):
    budget(alice, node_hours=5)
    # 2 workers x (1 h timeout + 10 min margin, rounded up to 2 h) = 4 node-hours: fits.
    job = make_job(spark_target="new_cluster", cluster_size=2, timeout_seconds=3600)
    assert usage.run_cluster_node_hours(job) == 4
    assert alice_client.post(reverse("jobs-run", args=[job.pk])).status_code == 302
    assert Run.objects.filter(job=job).count() == 1
    job.cluster_size = 3  # 6 node-hours
    job.save()
    page = alice_client.post(reverse("jobs-run", args=[job.pk]), follow=True)
    assert "This needs about 6.0 node-hours" in page.content.decode()
    assert Run.objects.filter(job=job).count() == 1
    local = make_job(name="on embedded Spark")  # no cluster of its own: no budget check
    assert alice_client.post(reverse("jobs-run", args=[local.pk])).status_code == 302
