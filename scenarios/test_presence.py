"""001 §3.2 PRESENCE: the admin dashboard sees another tab come online and leave, within the realtime budget."""

from harness.flows import presence_online


def test_presence_join_and_leave(zora) -> None:
    zora.run(presence_online(zora.scene, 0))
    zora.settle()
    zora.check("delivery", "no_leaks")  # presence has no commit timestamp: its latency is write->deliver, below
    seen = {(r["probe"], r["table"]) for r in zora.records() if r.get("kind") == "obs"
            and str(r.get("table", "")).startswith("presence:")}
    assert {("admin/dashboard", "presence:join"), ("admin/dashboard", "presence:leave")} <= seen
    late = [r for r in zora.records() if r.get("kind") == "obs" and str(r.get("table", "")).startswith("presence:")]
    assert late  # (the delivery check above already failed any copy slower than the realtime criterion's 500 ms)
    if zora.scene.js_probes:  # supabase-js's presence events too
        assert {("admin/dashboard@js", "presence:join"), ("admin/dashboard@js", "presence:leave")} <= seen
