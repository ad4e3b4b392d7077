"""Where the role finds downburst, in teuthology's order, with an executable
placed in each location on a real vpshost (its own /home and /root)."""

from __future__ import annotations

import yaml

from lab import Lab as VMLab
from support.ansible_run import run_tasks

CHECKOUT = "src/downburst/virtualenv/bin/downburst"
STEP = "Destroy the VM on its vpshost"


def test_discovery_order(tmp_path):
    with VMLab() as lab:
        (host,) = lab.start_vpshosts(1, with_downburst=False, private_root=True)
        inventory = tmp_path / "vpshosts.yml"
        inventory.write_text(yaml.safe_dump({"all": {"hosts": lab.inventory()}}))
        home = tmp_path / "home"
        home.mkdir()
        # The role writes the slot's VM state before the destroy: a real, locked slot (in check mode,
        # nothing is written).
        from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

        db = f"sqlite:///{tmp_path / 'lab.db'}"
        handle = Lab(db)
        name = "vpm009.front.sepia.ceph.com"
        handle.set_node(name, {"machine_type": "vps", "vpshost": host.name}, actor="admin@lab")
        (node,) = handle.lock(owner="alice@laptop", names=[name]).nodes
        handle.close()

        def found(**role_vars):
            """Dry-run the role's destroy (check mode) and return its result."""
            run = run_tasks(
                [{"name": "play", "ansible.builtin.include_role": {"name": "teuthology.lab.downburst"}, "ignore_errors": True}],
                "-i", str(inventory), "--check",
                hosts="localhost",
                connection="ssh",  # what a delegated task uses: the vpshost's own connection
                vars={"downburst_state": "absent", "downburst_node": node, "downburst_db": db, **role_vars},
                env={"HOME": str(home)},
            )
            return run.result(STEP)

        def place(path: str) -> str:
            host.write_file(path, "#!/bin/sh\nexit 0\n", mode=0o755)
            return path

        missing = found()
        assert missing["failed"]
        assert missing["msg"] == (
            f"vpm009.front.sepia.ceph.com: downburst not found; looked at: downburst on PATH, /root/{CHECKOUT}, "
            f"/home/ubuntu/{CHECKOUT}, /home/teuthology/{CHECKOUT}"
        )
        for expected in (f"/home/teuthology/{CHECKOUT}", f"/home/ubuntu/{CHECKOUT}", f"/root/{CHECKOUT}"):
            place(expected)
            assert found()["executable"] == expected
        on_path = host.bin_dir / "downburst"
        on_path.write_text("#!/bin/sh\nexit 0\n")
        on_path.chmod(0o755)
        result = found()
        assert result["executable"] == str(on_path) and result["searched"] == ["downburst on PATH"]

        configured = place("/home/ubuntu/configured/downburst")
        (home / ".teuthology.yaml").write_text(yaml.safe_dump({"downburst": configured, "lock_server": "x"}))
        assert found()["executable"] == configured
        mapped = place("/home/ubuntu/mapped/downburst")
        (home / ".teuthology.yaml").write_text(yaml.safe_dump({"downburst": {"path": mapped}}))
        assert found()["executable"] == mapped
        explicit = place("/home/ubuntu/explicit/downburst")
        assert found(downburst_executable=explicit)["executable"] == explicit
        wrong = found(downburst_executable="/home/ubuntu/nope/downburst")
        assert wrong["failed"] and "executable: /home/ubuntu/nope/downburst is not an executable file" in wrong["msg"]
        # The command line a destroy would run, as an argument vector.
        assert found()["commands"] == [[mapped, "-v", "-c", "qemu:///system", "destroy", "vpm009"]]
