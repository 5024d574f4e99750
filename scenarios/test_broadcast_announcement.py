"""001 §3.2 BROADCAST: an admin announcement reaches every app."""

from harness.flows import announcement


def test_announcement_reaches_everyone(zora) -> None:  # noqa: ANN001
    zora.run(announcement(zora.scene, 0))
    zora.settle()
    zora.check("delivery")
    got = {r["probe"] for r in zora.records() if r.get("kind") == "obs" and r.get("table") == "broadcast:announcement"}
    assert got == set(zora.scene.probe_names)  # our probes and their supabase-js twins
