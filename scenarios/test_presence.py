"""001 §3.2 PRESENCE: apps track who is online; a join and a leave reach the others."""

import asyncio

from harness.phoenix import AsyncPhoenix, Message


def test_presence_join_and_leave(zora) -> None:  # noqa: ANN001
    target = zora.scene.run.target
    url = f"{target.realtime_url}?apikey={target.anon_key}&vsn=1.0.0"

    async def go() -> list[tuple[str, dict]]:
        seen: list[tuple[str, dict]] = []
        watcher = AsyncPhoenix(url, on_event=lambda e, t: seen.append((e.event, e.payload))
                               if isinstance(e, Message) else None)
        vendor = AsyncPhoenix(url)
        await watcher.connect()
        await vendor.connect()
        topic = f"realtime:online-{zora.scene.run.run_id}"
        admin_token = zora.scene.actors["admin/dashboard"].token
        vendor_token = zora.scene.actors["vendor-1/portal"].token
        await watcher.join(topic, {"config": {"presence": {"key": "admin", "enabled": True}},
                                   "access_token": admin_token})
        await vendor.join(topic, {"config": {"presence": {"key": "vendor-1", "enabled": True}},
                                  "access_token": vendor_token})
        rep = await vendor.push(topic, "presence", {"type": "presence", "event": "track", "payload": {"role": "vendor"}})
        assert rep.status == "ok"
        for _ in range(100):
            if any(ev == "presence_diff" and "vendor-1" in p.get("joins", {}) for ev, p in seen):
                break
            await asyncio.sleep(0.02)
        await vendor.close()
        for _ in range(100):
            if any(ev == "presence_diff" and "vendor-1" in p.get("leaves", {}) for ev, p in seen):
                break
            await asyncio.sleep(0.02)
        await watcher.close()
        return seen

    seen = zora.run(go())
    assert any(ev == "presence_diff" and p["joins"].get("vendor-1", {}).get("metas", [{}])[0].get("role") == "vendor"
               for ev, p in seen)
    assert any(ev == "presence_diff" and "vendor-1" in p.get("leaves", {}) for ev, p in seen)
