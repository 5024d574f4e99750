"""What a person sees (001 §9.2, 000 §5.2 Multiple Tabs): the order flow and the status update reach the vendor
portal and the admin dashboard running in real Chromium, two tabs each (the second opened behind the first),
on the screen within 1 s; every tab shows the same rows in the same order; each page's clock is placed on the
harness's to within a stated error."""

import pytest

from harness.flows import order_flow, status_update
from harness.pytest_plugin import Zora
from harness.records import BrowserTab, Change, Indicator

pytestmark = pytest.mark.zora(browser={"tabs": 2})


def test_orders_and_status_on_screen_in_every_tab(zora: Zora) -> None:
    zora.run(order_flow(zora.scene, 0))
    zora.run(status_update(zora.scene, 0))
    zora.settle()
    zora.check("delivery", "no_leaks", "ordering", "order_visible", "status_everywhere", "order_on_screen",
               "status_on_screen")
    records = zora.records()
    tabs = zora.scene.tabs
    assert set(tabs) == {"vendor-1/portal", "admin/dashboard"} and all(len(v) == 2 for v in tabs.values())

    def shown(probe: str) -> list[tuple[str, str, object]]:
        return [(r.table, r.type, (r.record or {}).get("status")) for r in records
                if isinstance(r, Change) and r.probe == probe and r.table == "orders"]

    for spec, names in tabs.items():
        assert shown(names[0]) == shown(names[1]) == shown(spec) != [], spec  # all tabs in sync, in order
    on_screen = [r for r in records if isinstance(r, Change) and r.probe in tabs["vendor-1/portal"]]
    assert on_screen and all(r.screen_t is not None and r.screen_t >= r.t for r in on_screen)
    started = [r for r in records if isinstance(r, BrowserTab) and r.phase == "start"]
    assert {r.probe for r in started} == {n for v in tabs.values() for n in v}
    assert all(0 < r.clock_error_ns < 50_000_000 for r in started)  # placed on our clock, its error stated
    assert {r.probe for r in started if not r.front and not r.focused} == {v[1] for v in tabs.values()}
    live = {r.probe for r in records if isinstance(r, Indicator) and r.state == "Live"}
    assert live == {n for v in tabs.values() for n in v}  # every indicator came to Live once subscribed
